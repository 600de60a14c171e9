"""Secrets by reference, and the redactor that keeps them out of every text we write."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from volley.errors import SecretError

__all__ = ["SecretRef", "install_log_redaction", "redact", "register_secret"]

_MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret value so that `redact` removes it from any text."""
    if len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in `text` with a mask."""
    if not _secrets or not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


class SecretRef(BaseModel):
    """Where a secret lives: an environment variable or a Prefect Secret block.

    The spec file never holds the secret itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    prefect_secret: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.prefect_secret is None):
            raise ValueError("give exactly one of 'env' or 'prefect_secret'")
        return self

    def describe(self) -> str:
        if self.env is not None:
            return f"environment variable {self.env}"
        return f"Prefect Secret block {self.prefect_secret!r}"

    def resolve(self, field: str, redacted: bool = True) -> SecretStr:
        """Fetch the secret; the error names the field and the reference, never a value.

        `redacted=False` for a credential that is not itself secret (a user name): masking a
        word as common as a user name would mask it in paths and names everywhere.
        """
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise SecretError(f"{field}: {self.describe()} is not set")
        else:
            value = _load_prefect_secret(str(self.prefect_secret), field, self.describe())
        if redacted:
            register_secret(value)
        return SecretStr(value)


def _load_prefect_secret(name: str, field: str, described: str) -> str:
    from prefect.blocks.system import Secret

    try:
        # Inside an async flow a plain `load` returns a coroutine (Prefect's async_dispatch).
        block = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    except Exception as exc:  # the block API raises ValueError, httpx errors, ...
        raise SecretError(f"{field}: cannot load {described}: {type(exc).__name__}") from None
    value: object = block.get()  # type: ignore[union-attr]
    if not isinstance(value, str) or not value:
        raise SecretError(f"{field}: {described} is empty or not a string")
    return value


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg = cleaned
                record.args = None
        return True


_installed: set[int] = set()


def install_log_redaction(*loggers: logging.Logger | Any) -> None:
    """Attach the redacting filter to the handlers of the given loggers (and the root)."""
    targets: list[Any] = [logging.getLogger(), *loggers]
    for logger in targets:
        for handler in [*getattr(logger, "handlers", []), logger]:
            if id(handler) not in _installed and hasattr(handler, "addFilter"):
                handler.addFilter(_RedactingFilter())
                _installed.add(id(handler))
