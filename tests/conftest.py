"""Shared fixtures. Prefect gets its own home per test session (a stale SQLite locks)."""

from __future__ import annotations

import os
import tempfile

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="volley-prefect-home-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.pop("PREFECT_API_URL", None)

from collections.abc import Iterator

import pytest

from tests.support import RESPONSYS_PASSWORD, RESPONSYS_USER


@pytest.fixture
def responsys_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSYS_USER", RESPONSYS_USER)
    monkeypatch.setenv("RESPONSYS_PASSWORD", RESPONSYS_PASSWORD)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One embedded Prefect server for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_uri() -> str:
    """PostgreSQL for the tests (VOLLEY_TEST_POSTGRES_URI, default 127.0.0.1:5432/test, trust auth).

    Unreachable: the test is skipped, unless VOLLEY_REQUIRE_POSTGRES=1 (CI), where it fails.
    """
    import psycopg

    uri = os.environ.get("VOLLEY_TEST_POSTGRES_URI", POSTGRES_URI)
    try:
        with psycopg.connect(uri, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        words = str(exc).strip().splitlines()
        reason = f"PostgreSQL not reachable at {uri}: {words[0] if words else type(exc).__name__}"
        if os.environ.get("VOLLEY_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (VOLLEY_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    return uri
