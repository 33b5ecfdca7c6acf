"""The faust parts Warden replaces keep their promises: no table wait, and a fetch wait Warden sets."""

from __future__ import annotations

import faust
import pytest

from warden.runtime.faust_parts import NoTablesManager, use_fetch_wait


async def test_the_table_manager_refuses_to_start_without_waiting_when_a_table_was_declared() -> None:
    """Its start skips faust's 1 s wait for late tables; that is only right while Warden declares none."""
    app = faust.App("warden-test-tables", broker="kafka://127.0.0.1:1", TableManager=NoTablesManager,
                    store="memory://")
    app.Table("late")
    with pytest.raises(RuntimeError, match="declares no faust tables"):
        await app.tables.on_start()


async def test_the_consumer_an_app_makes_waits_as_long_as_warden_says() -> None:
    app = faust.App("warden-test-fetch", broker="kafka://127.0.0.1:1", store="memory://")
    use_fetch_wait(app, 7)
    async def ignore(*_: object) -> None: ...

    consumer = app.transport.create_consumer(callback=ignore, on_partitions_revoked=ignore,
                                             on_partitions_assigned=ignore)
    made = consumer._thread._create_worker_consumer(app.transport)  # what start() would start
    try:
        assert made._fetch_max_wait_ms == 7
    finally:
        await made.stop()
