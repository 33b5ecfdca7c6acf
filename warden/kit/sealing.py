"""Secrets Warden must keep for later (a token waiting for approval, a dead letter's token) are kept sealed.

Fernet (from `cryptography`): AES-128-CBC with an HMAC-SHA256, so a sealed value can be neither read nor altered
without the key. The key comes from a setting; the embedded default generates one in the data dir (mode 0600).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "seal.key"
SCHEME = b"fernet"  # how a sealed value says what sealed it (e.g. a dead letter's `warden.sealed` header)


class SealError(ValueError):
    """A sealed value that this key cannot open (another key, or altered)."""


class Sealer:
    """Seals and opens short secrets with one Fernet key."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ValueError("the seal key must be 32 url-safe base64-encoded bytes (Fernet.generate_key())") from exc

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def seal_bytes(self, secret: bytes) -> bytes:
        """Bytes in, a Fernet token out (url-safe base64, about a third larger): a dead letter's value."""
        return self._fernet.encrypt(secret)

    def open_bytes(self, sealed: bytes) -> bytes:
        try:
            return self._fernet.decrypt(sealed)
        except InvalidToken as exc:
            raise SealError("sealed value cannot be opened with this key (another key, or altered)") from exc

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise SealError("sealed value cannot be opened with this key (another key, or altered)") from exc


def key_in(data_dir: Path) -> bytes:
    """The embedded default's key: read from `data_dir/seal.key`, created there (0600) on first use."""
    path = data_dir / KEY_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key
