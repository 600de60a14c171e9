"""Audiences, specs and credentials for the Sprinklr and Intilery tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.support import FAST_LIMITS, with_overrides

# What the simulators accept by default (sim/config.py), as scripts/demo.py sets them.
SPRINKLR_ENV = {
    "SPRINKLR_API_KEY": "sprinklr-demo-key",
    "SPRINKLR_ACCESS_TOKEN": "sprinklr-demo-access",
    "SPRINKLR_REFRESH_TOKEN": "sprinklr-demo-refresh",
    "SPRINKLR_CLIENT_SECRET": "sprinklr-demo-secret",
}
SPRINKLR_CLIENT_ID = "sprinklr-demo-client"
INTILERY_ENV = {"INTILERY_AUTH_TOKEN": "intilery-demo-token"}


def set_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def sprinklr_audience(rows: int, start: int = 0) -> pl.DataFrame:
    """Existing profiles, reached by email."""
    return pl.DataFrame(
        {
            "email": [f"user{start + i:06d}@example.com" for i in range(rows)],
            "first_name": [("Chloé" if i % 5 == 0 else "Femi") for i in range(rows)],
            "offer": [f"OFFER-{i % 7}" for i in range(rows)],
        }
    )


def sprinklr_spec(
    source: Path | str,
    base_url: str = "http://127.0.0.1:9/sprinklr",
    token_dir: Path | str = ".volley/tokens",
    **overrides: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "welcome",
        "vendor": "sprinklr",
        "source": {"path": str(source)},
        "key": "email",
        "vendor_params": {
            "mode": "trigger",
            "journey_id": "welcome-journey",
            "sn_type": "EMAIL",
            "context_params": [{"name": "firstName", "column": "first_name"}, "offer"],
        },
        "connection": {
            "base_url": base_url,
            "api_key": {"env": "SPRINKLR_API_KEY"},
            "access_token": {"env": "SPRINKLR_ACCESS_TOKEN"},
            "refresh_token": {"env": "SPRINKLR_REFRESH_TOKEN"},
            "client_id": SPRINKLR_CLIENT_ID,
            "client_secret": {"env": "SPRINKLR_CLIENT_SECRET"},
            "redirect_uri": "https://localhost/volley/callback",
            "token_store_dir": str(token_dir),
        },
        "limits": {**FAST_LIMITS, "requests_per_hour": 100_000},
    }
    return with_overrides(spec, copy.deepcopy(overrides))


NEW_PROFILE_PARAMS: dict[str, Any] = {
    "mode": "new_profile",
    "sn_type": None,  # laid over the trigger spec of sprinklr_spec
    "journey_id": "welcome-journey",
    "context_params": ["offer"],
    "new_profile": {
        "contact": [{"name": "firstName", "column": "first_name"}],
        "profiles": [
            {"channel_type": "EMAIL", "channel_id_column": "email", "name_column": "first_name"},
            {"channel_type": "SMS", "channel_id_column": "phone"},
        ],
    },
}


def intilery_audience(rows: int, start: int = 0) -> pl.DataFrame:
    """Abandoned bookings: a customer id, a booking and when it was abandoned."""
    return pl.DataFrame(
        {
            "customer_id": [f"CUST/{start + i:06d}" for i in range(rows)],
            "booking_id": [str(1000 + i) for i in range(rows)],
            "destination": [("Málaga" if i % 4 == 0 else "Oslo") for i in range(rows)],
            "nights": [1 + i % 9 for i in range(rows)],
            "abandoned_at": [f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:15:00.000Z" for i in range(rows)],
        }
    )


def intilery_spec(
    source: Path | str, base_url: str = "http://127.0.0.1:9/intilery", **overrides: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "abandoned-booking",
        "vendor": "intilery",
        "source": {"path": str(source)},
        "key": "customer_id",
        "vendor_params": {
            "event": "SEND_SMS",
            "asset_id": "202007-B-AbandonedBooking",
            "timestamp_column": "abandoned_at",
            "merge_data": [{"name": "bookingId", "column": "booking_id"}, "destination", "nights"],
        },
        "connection": {
            "base_url": base_url,
            "client_id": "volley",
            "account_id": "1",
            "brand_id": "DEMO",
            "auth_token": {"env": "INTILERY_AUTH_TOKEN"},
        },
        "limits": dict(FAST_LIMITS),
    }
    return with_overrides(spec, copy.deepcopy(overrides))
