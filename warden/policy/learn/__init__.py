"""`warden policy learn`: draft an ownership matrix from recorded activity, generalised, every entry in shadow mode.
Pure: events in (one at a time, bounded memory), YAML text out; the CLI reads the files and writes the folder."""

from warden.policy.learn.draft import SHADOWED, Draft, draft
from warden.policy.learn.observe import Learner

__all__ = ["SHADOWED", "Draft", "Learner", "draft"]
