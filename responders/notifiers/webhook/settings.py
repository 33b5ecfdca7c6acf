"""The webhook notifier's settings fragment: the WARDEN_WEBHOOK_* variables, documented here, not in the README."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from warden.kit.urls import http_url


class WebhookSettings(BaseModel):
    """Where every notice is POSTed, and the Standard Webhooks secret that signs it (from a file: a mounted Secret)."""

    webhook_url: str | None = Field(None, description="http(s) URL every incident notice is POSTed to as JSON, "
                                    "signed with Standard Webhooks; with WARDEN_WEBHOOK_SECRET_FILE, WARDEN_NOTIFIERS "
                                    "may name `webhook`. No credentials in it (they would show in logs).")
    webhook_secret_file: Path | None = Field(None, description="File holding the whsec_ signing secret (a mounted "
                                             "Secret); receivers verify `webhook-signature` with it.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Timeout of one webhook request; a timed-out notice "
                                     "is retried with the same webhook-id, so the receiver can drop the repeat.")

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            http_url(v)
        return v

    @field_validator("webhook_secret_file")
    @classmethod
    def _secret(cls, v: Path | None) -> Path | None:
        if v is None:
            return v
        if not (v.is_file() and os.access(v, os.R_OK)):
            raise ValueError(f"{v} is not a readable file")
        secret = read_secret(v)
        try:  # the Standard Webhooks form: whsec_ and 24 to 64 random bytes in base64 (the library is lenient)
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            key = b""
        if not secret.startswith("whsec_") or not 24 <= len(key) <= 64:
            raise ValueError(f"{v} does not hold a Standard Webhooks secret (whsec_ and 24-64 bytes in base64)")
        return v


def read_secret(path: Path) -> str:
    """The signing secret in `path`, surrounding whitespace stripped."""
    return path.read_text().strip()
