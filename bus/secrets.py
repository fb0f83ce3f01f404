"""Secrets given through the API (a connection's API key, password or client secret), sealed.

They are kept in Redis only encrypted (Fernet: AES-128-CBC + HMAC-SHA256, from the
`cryptography` library) with the key in BUS_SECRETS_KEY, so a Redis dump or a replica holds
ciphertext only; brokers seal, workers unseal just before the request. Secrets declared in
YAML are never sealed: YAML names an environment variable (`*_from_env`) that the worker reads.
`bus up` generates a key into its data directory when the environment has none.
"""
from __future__ import annotations

import os

from cryptography.fernet import Fernet, InvalidToken

ENV = "BUS_SECRETS_KEY"


class SecretsUnavailable(Exception):
    """No usable BUS_SECRETS_KEY, or a sealed secret it cannot open (another key sealed it)."""


def new_key() -> str:
    return Fernet.generate_key().decode()


def _fernet() -> Fernet:
    key = os.environ.get(ENV)
    if not key:
        raise SecretsUnavailable(f"{ENV} is not set: secrets given through the API cannot be sealed or opened")
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        raise SecretsUnavailable(f"{ENV} is not a key (32 bytes, url-safe base64: `bus secrets-key` makes one)") from None


def seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str:
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise SecretsUnavailable(f"a sealed secret does not open with this {ENV} (sealed under another key?)") from None


def resolve(from_env: str | None, sealed: str | None) -> str:
    """A secret's value: from the named environment variable, or unsealed. SecretsUnavailable if neither."""
    if from_env:
        value = os.environ.get(from_env)
        if value is None:
            raise SecretsUnavailable(f"environment variable {from_env} is not set in this worker")
        return value
    if sealed:
        return unseal(sealed)
    raise SecretsUnavailable("no secret configured")
