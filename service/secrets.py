"""Secrets at rest: webhook signing secrets and metric-source headers are stored
encrypted (Fernet: AES-128-CBC with HMAC-SHA256, from `cryptography`) under a key
derived from OKR_SECRETS_KEY, so a copy of the database (a backup, an export) holds no
usable secret. They are never logged and never read back through the API: a webhook
secret is shown once, when created or rotated."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken

from service.settings import Settings


class SecretUnreadable(Exception):
    """Stored under another key (OKR_SECRETS_KEY changed) or damaged."""


@dataclass(frozen=True)
class Box:
    fernet: Fernet

    @classmethod
    def of_key(cls, key: str) -> Box:
        # Any string of enough entropy: SHA-256 makes it the 32 bytes Fernet takes.
        digest = hashlib.sha256(b"okr-secrets:" + key.encode()).digest()
        return cls(Fernet(base64.urlsafe_b64encode(digest)))

    @classmethod
    def from_settings(cls, settings: Settings) -> Box:
        return cls.of_key(settings.resolved_secrets_key())

    def seal(self, plain: str) -> str:
        return self.fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self.fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a stored secret cannot be read with this OKR_SECRETS_KEY"
            ) from None

    def __repr__(self) -> str:  # never the key, in a log or a traceback
        return "Box(...)"
