"""Sprinklr OAuth: access tokens refreshed with single-use refresh tokens that must outlive the run.

`POST {base}/oauth/token` (form: client_id, client_secret, redirect_uri,
grant_type=refresh_token, refresh_token) answers a new `access_token`, a new `refresh_token`
and `expires_in`. The refresh token just used is dead from then on, so the new one is written
down *before* it is used, in two places:

- the token store, a small JSON file (mode 0600, directory 0700) under
  `connection.token_store_dir` (default `.volley/tokens`), named after what the tokens belong
  to: the base URL, the client id and where the configured refresh token lives
  (`sprinklr-<digest>.json`). Two campaigns that share credentials share one file, so one
  never burns the other's token. The file records the fingerprint (truncated SHA-256) of the
  refresh token it was started from (`seed`): it is used only while the configured source
  still holds that token, so putting a new refresh token into the environment (after a
  re-authorization) is noticed and wins over the file.
- when the refresh token's SecretRef is a Prefect Secret block, the block itself is
  overwritten with the new value (and the access token's block, if it has one). If saving
  the block fails the file still has the token, and the next run reads it from there.

Refreshes are single-flight: an asyncio.Lock within the process and an exclusive `flock` on
`<store>.lock` across processes. Under the lock the store is read again: if another process
rotated the tokens meanwhile, they are adopted instead of spending a dead refresh token.

A refresh answer that is lost (timeout after sending) may have consumed the refresh token;
the retry then fails with `invalid_grant` and the run stops asking for a new authorization:
nothing else is safe with single-use tokens. Every token is registered with the redactor.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from volley.connector import ConnectorError, json_error_body
from volley.resolution import Action, Resolution, parse_retry_after
from volley.secrets import SecretRef, redact, register_secret

__all__ = ["SprinklrAuth", "StoredTokens", "TokenStore", "fingerprint", "is_over_rate", "store_path"]

log = logging.getLogger("volley.connectors.sprinklr")

_OVER_RATE = re.compile(r"developer over (rate|qps)", re.IGNORECASE)


def is_over_rate(response: httpx.Response) -> bool:
    """Sprinklr's gateway (Mashery) refuses over-limit calls with 403 and an HTML page, not JSON."""
    code = response.headers.get("x-mashery-error-code", "")
    return "OVER_RATE" in code.upper() or "OVER_QPS" in code.upper() or bool(_OVER_RATE.search(response.text))


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def store_path(directory: str | Path, base_url: str, client_id: str, refresh_ref: SecretRef) -> Path:
    """`<directory>/sprinklr-<digest>.json`: one file per environment, client and refresh token source."""
    digest = hashlib.blake2b(
        "\0".join((base_url, client_id, refresh_ref.describe())).encode(), digest_size=8
    ).hexdigest()
    return Path(directory) / f"sprinklr-{digest}.json"


@dataclass(frozen=True, slots=True)
class StoredTokens:
    refresh_token: str
    access_token: str | None = None
    refresh_at: float | None = None  # wall clock (epoch seconds): refresh before this
    expires_at: float | None = None


class TokenStore:
    """The token file: read whole, written whole (temporary file, fsync, rename), mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, trusted_seeds: set[str]) -> StoredTokens | None:
        """The stored tokens, if the file exists, is readable and descends from a trusted seed."""
        try:
            document = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError, OSError):
            return None
        if not isinstance(document, dict) or document.get("seed") not in trusted_seeds:
            return None
        refresh = document.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            return None
        access = document.get("access_token")
        tokens = StoredTokens(
            refresh_token=refresh,
            access_token=access if isinstance(access, str) and access else None,
            refresh_at=_number(document.get("refresh_at")),
            expires_at=_number(document.get("expires_at")),
        )
        for value in (tokens.refresh_token, tokens.access_token):
            if value:
                register_secret(value)
        return tokens

    def write(self, tokens: StoredTokens, seed: str) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        document = {
            "seed": seed,
            "refresh_token": tokens.refresh_token,
            "access_token": tokens.access_token,
            "refresh_at": tokens.refresh_at,
            "expires_at": tokens.expires_at,
            "updated_at": time.time(),
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, orjson.dumps(document, option=orjson.OPT_INDENT_2))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, self.path)

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Exclusive across processes (flock on `<store>.lock`), waited for in a thread."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, descriptor, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _refused(code: str, message: str, status: int | None = None) -> ConnectorError:
    return ConnectorError(Resolution(Action.ABORT, code, redact(message)), status)


class SprinklrAuth:
    """Holds the current tokens and refreshes them once, whoever asks first."""

    def __init__(
        self,
        *,
        token_url: str,
        api_key: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        refresh_token: str,
        refresh_ref: SecretRef,
        access_token: str | None,
        access_ref: SecretRef | None,
        store: TokenStore,
        refresh_margin_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = token_url
        self.store = store
        self._api_key = api_key
        self._client = {"client_id": client_id, "client_secret": client_secret, "redirect_uri": redirect_uri}
        self._refresh = refresh_token
        self._refresh_ref = refresh_ref
        self._access = access_token
        self._access_ref = access_ref
        self._refresh_at: float | None = None
        self._margin = refresh_margin_seconds
        self._clock = clock
        # The fingerprint of what the configured source holds, and of every refresh token held
        # since: a store file descending from one of them is newer than the configuration.
        self._seed = fingerprint(refresh_token)
        self._known = {self._seed}
        self._fresh = False  # the current access token came from a refresh and no answer has accepted it yet
        self._loaded = False
        self._lock: asyncio.Lock | None = None
        self.refreshes = 0

    # -- what the connector asks -------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        assert self._access is not None
        return {"Authorization": f"Bearer {self._access}", "Key": self._api_key}

    async def authorize(self, client: httpx.AsyncClient) -> Mapping[str, str]:
        if not self._loaded or self._access is None or self._due():
            async with self._auth_lock():
                if not self._loaded:
                    self._load()
                if self._access is None or self._due():
                    await self._rotate(client)
        return self.headers()

    async def reauthorize(self, client: httpx.AsyncClient, stale: Mapping[str, str]) -> None:
        """A 401: refresh once, unless someone already did; a refreshed token refused again is final."""
        async with self._auth_lock():
            if self._access is not None and stale.get("Authorization") != f"Bearer {self._access}":
                return
            if self._fresh:
                raise _refused(
                    "TOKEN_REFUSED_AFTER_REFRESH",
                    "Sprinklr refused the access token it had just issued (401 twice): "
                    "check the API key, the client and the token's permissions",
                    401,
                )
            await self._rotate(client)

    def saw_answer(self, response: httpx.Response) -> None:
        """An answer other than 401/403 to a request with the current token: the token works."""
        if not self._fresh or response.status_code in (401, 403):
            return
        try:
            sent = response.request.headers.get("Authorization")
        except RuntimeError:  # a response built without its request (tests)
            return
        if self._access is not None and sent == f"Bearer {self._access}":
            self._fresh = False

    # -- internals ---------------------------------------------------------------------------
    def _auth_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _due(self) -> bool:
        return self._refresh_at is not None and self._clock() >= self._refresh_at

    def _load(self) -> None:
        """The store's tokens when it descends from the configured refresh token, else the configured ones."""
        self._loaded = True
        stored = self.store.read(self._known)
        if stored is not None:
            self._adopt(stored)
            log.info("Sprinklr tokens read from the token store %s", self.store.path)

    def _adopt(self, stored: StoredTokens) -> None:
        self._refresh = stored.refresh_token
        self._known.add(fingerprint(stored.refresh_token))
        if stored.access_token is not None and (stored.expires_at is None or self._clock() < stored.expires_at):
            self._access = stored.access_token
            self._refresh_at = stored.refresh_at
        else:
            self._access, self._refresh_at = None, None
        self._fresh = False

    async def _rotate(self, client: httpx.AsyncClient) -> None:
        async with self.store.locked():
            stored = self.store.read(self._known)
            if stored is not None and stored.refresh_token != self._refresh:
                self._adopt(stored)  # another process refreshed meanwhile: its tokens are the live ones
                if self._access is not None and not self._due():
                    return
            await self._refresh_tokens(client)

    async def _refresh_tokens(self, client: httpx.AsyncClient) -> None:
        self.refreshes += 1
        form = {**self._client, "grant_type": "refresh_token", "refresh_token": self._refresh}
        try:
            response = await client.post(self.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            message = f"token refresh got no answer ({type(exc).__name__}); a lost answer may have spent the token"
            raise ConnectorError(Resolution(Action.RETRY, "REFRESH_UNREACHABLE", message)) from None
        if response.status_code != 200:
            raise self._refresh_error(response)
        try:
            answer: Any = orjson.loads(response.content)
            access = str(answer["access_token"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise _refused("REFRESH_UNREADABLE", "the token refresh answer has no access_token", 200) from None
        refresh = answer.get("refresh_token") or self._refresh  # single use: normally always a new one
        register_secret(access)
        register_secret(str(refresh))
        now = self._clock()
        lifetime = _number(answer.get("expires_in"))
        tokens = StoredTokens(
            refresh_token=str(refresh),
            access_token=access,
            refresh_at=now + max(lifetime - self._margin, lifetime / 2) if lifetime else None,
            expires_at=now + lifetime if lifetime else None,
        )
        # Written down before anything else: the refresh token just spent is dead.
        self.store.write(tokens, self._seed)
        self._access, self._refresh, self._refresh_at = access, tokens.refresh_token, tokens.refresh_at
        self._known.add(fingerprint(tokens.refresh_token))
        self._fresh = True
        await self._save_blocks(tokens)
        log.info("Sprinklr access token refreshed; the new refresh token is kept in %s", self.store.path)

    def _refresh_error(self, response: httpx.Response) -> ConnectorError:
        status = response.status_code
        if status == 429 or (status == 403 and is_over_rate(response)):
            wait = parse_retry_after(response.headers.get("retry-after"))
            return ConnectorError(Resolution(Action.THROTTLE, "REFRESH_THROTTLED", "token refresh throttled", wait))
        if status >= 500:
            return ConnectorError(Resolution(Action.RETRY, f"HTTP_{status}", "token refresh failed"), status)
        body = json_error_body(response) or {}
        reason = ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k)) or f"HTTP {status}"
        return _refused(
            "REFRESH_REFUSED",
            f"Sprinklr refused the token refresh ({reason[:200]}); a new authorization (refresh token) is needed",
            status,
        )

    async def _save_blocks(self, tokens: StoredTokens) -> None:
        """Refs that are Prefect Secret blocks get the new values; the store file has them anyway."""
        name = self._refresh_ref.prefect_secret
        if name is not None and await _save_block(name, tokens.refresh_token, self.store.path):
            self._seed = fingerprint(tokens.refresh_token)  # the block now holds the new token
        if self._access_ref is not None and self._access_ref.prefect_secret is not None and tokens.access_token:
            await _save_block(self._access_ref.prefect_secret, tokens.access_token, self.store.path)


async def _save_block(name: str, value: str, fallback: Path) -> bool:
    try:
        from prefect.blocks.system import Secret

        await Secret(value=value).asave(name, overwrite=True)
    except Exception as exc:  # the API may be down; the store file still has the token
        log.warning(
            "could not save the new Sprinklr token into Prefect Secret block %r (%s); it is kept in %s",
            name,
            type(exc).__name__,
            fallback,
        )
        return False
    return True
