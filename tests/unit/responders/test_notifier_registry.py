"""Each notifier package brings its settings, documented there; the registry composes them into the runtime's."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from responders.notifiers.plugin import NotifierPlugin
from responders.notifiers.registry import FALLBACK, NOTIFIERS, notifier_names
from service.runtime.settings import Settings

PLUGINS = sorted(NOTIFIERS)


@pytest.mark.parametrize("name", PLUGINS)
def test_a_notifier_documents_each_of_its_variables_in_its_own_package(name: str) -> None:
    plugin: NotifierPlugin[Any] = NOTIFIERS[name]
    assert plugin.name == name, "a notifier is registered under its package's name"
    for field, info in plugin.settings.model_fields.items():
        assert field.startswith(f"{name}_"), f"WARDEN_{field.upper()} does not say which notifier it is for"
        assert info.description and len(info.description) > 10, f"WARDEN_{field.upper()} has no description"
    assert set(plugin.needs) <= set(plugin.settings.model_fields), "a notifier needs only its own settings"


@pytest.mark.parametrize("name", PLUGINS)
def test_the_runtime_settings_carry_each_notifiers_fields_with_their_defaults(name: str) -> None:
    for field, info in NOTIFIERS[name].settings.model_fields.items():
        assert Settings.model_fields[field].default == info.default
        assert Settings.model_fields[field].description == info.description


def test_two_notifiers_never_claim_one_variable() -> None:
    fields = [f for p in NOTIFIERS.values() for f in p.settings.model_fields]
    assert len(fields) == len(set(fields))


def test_a_notifiers_settings_are_read_from_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_SLACK_TOKEN", "xoxb-from-the-environment")
    monkeypatch.setenv("WARDEN_SLACK_CHANNEL_BURST", "5")
    settings = Settings()
    fragment = NOTIFIERS["slack"].fragment(settings)
    assert fragment.slack_token == SecretStr("xoxb-from-the-environment") and fragment.slack_channel_burst == 5


def test_unset_notifiers_are_the_default_ones_that_are_set_up_else_the_console() -> None:
    assert notifier_names(None, {}) == [FALLBACK] == ["console"]
    assert notifier_names(None, {"slack_token": SecretStr("xoxb-1")}) == ["slack"]
    assert notifier_names("console", {}) == ["console"]
