"""The worker's HTTP server (aiohttp): /metrics, /healthz, and routes that responders add (Slack callbacks)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from responders.base import RouteInstaller


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


class WebServer:
    """Binds WARDEN_WEB_BIND (loopback by default); never serves table contents."""

    def __init__(self, host: str, port: int, installers: list[RouteInstaller] | None = None) -> None:
        self.host, self.port = host, port
        self.app = web.Application(client_max_size=1024 * 1024)
        self.app.router.add_get("/metrics", _metrics)
        self.app.router.add_get("/healthz", _healthz)
        for install in installers or []:
            install(self.app)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # report the port the OS chose
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
