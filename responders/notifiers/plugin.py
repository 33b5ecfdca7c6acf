"""What a notifier package hands the registry: its name, its settings fragment, and how to build it from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from responders.config import ResponderConfig
    from responders.notifiers.base import Notifier

S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True)
class NotifierPlugin(Generic[S]):
    """One notifier as the core sees it. `settings` is a pydantic model whose fields become WARDEN_<FIELD>
    variables (each with its description: the package documents its own settings); `build` makes the notifier from
    them (importing its client library only then, so `warden schema` stays fast). `needs`: fields that must be set
    before the notifier can work (naming it without them stops start-up); `by_default`: chosen when WARDEN_NOTIFIERS
    is unset and its `needs` are met. `actor`: the identities a matrix may name for it (`members: {name: [...]}`),
    if people act through it."""

    name: str
    settings: type[S]
    build: Callable[[S, ResponderConfig], Notifier]
    needs: tuple[str, ...] = ()
    by_default: bool = False
    actor: Callable[[str], bool] | None = None

    def fragment(self, values: object) -> S:
        """This notifier's settings out of the composed settings (any object with its fields as attributes)."""
        return self.settings.model_construct(**{f: getattr(values, f) for f in self.settings.model_fields})
