"""Audiences, specs and log checks for the MedChat and Relay tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from sim.config import DEMO_CHATBOT_ID
from sim.log import read_log
from tests.support import with_overrides

MEDCHAT_TOKEN = "medchat-demo-token"
RELAY_API_KEY = "relay-demo-key"
RELAY_TRIGGER = "Delivery-Reminder-2"
RELAY_JOURNEY = "27b88f6f-2261-4dfc-bf04-1bf8309857a9"

FAST_LIMITS: dict[str, Any] = {
    "concurrency": 4,
    "timeout_seconds": 2,
    "backoff_initial_seconds": 0.01,
    "backoff_max_seconds": 0.1,
    "backoff_jitter_seconds": 0.01,
    "throttle_backoff_seconds": 0.2,
    "max_attempts": 10,
}


def medchat_audience(rows: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "patient_id": [str(100000 + start + i) for i in range(rows)],
            "patient_name": [("Zoë Müller" if i % 7 == 0 else "John Smith") for i in range(rows)],
            "appointment_id": [f"AP-{start + i:06d}" for i in range(rows)],
            "appointment_at": [f"2025-03-{14 + i % 10:02d} {8 + i % 9:02d}:30" for i in range(rows)],
        }
    )


def medchat_spec(source: Path | str, base_url: str = "http://127.0.0.1:9/medchat", **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "reminder",
        "vendor": "medchat",
        "source": {"path": str(source)},
        "key": "appointment_id",
        "vendor_params": {
            "chatbot_id": DEMO_CHATBOT_ID,
            "time_zone": "America/Chicago",
            "parameters": {
                "patientId": "patient_id",
                "patientName": "patient_name",
                "appointmentId": "appointment_id",
                "appointmentDateTime": {"column": "appointment_at", "type": "datetime"},
            },
        },
        "connection": {"base_url": base_url, "org_id": "volley-org", "token": {"env": "MEDCHAT_TOKEN"}},
        "limits": dict(FAST_LIMITS),
    }
    return _merge(spec, overrides)


def relay_audience(rows: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ccid": [f"CRD-{start + i:06d}" for i in range(rows)],
            "first_name": [("Chloé" if i % 5 == 0 else "Bo") for i in range(rows)],
            "order_id": [f"SO-{700000 + start + i}" for i in range(rows)],
        }
    )


def relay_spec(
    source: Path | str, base_url: str = "http://127.0.0.1:9/relay/platform/v3/api", **overrides: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "delivery",
        "vendor": "relay",
        "source": {"path": str(source)},
        "key": "ccid",
        "vendor_params": {"trigger_id": RELAY_TRIGGER, "inputs": ["first_name", "order_id"]},
        "connection": {"base_url": base_url, "client_id": "volley-demo", "api_key": {"env": "RELAY_API_KEY"}},
        "limits": dict(FAST_LIMITS),
    }
    return _merge(spec, overrides)


def _merge(spec: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    return with_overrides(spec, overrides)


def processed_entries(log_path: Path, vendor: str) -> pl.DataFrame:
    """Every recipient of every request the simulator applied (whatever its status): vendor, key, status."""
    return (
        read_log(log_path)
        .filter((pl.col("vendor") == vendor) & pl.col("processed"))
        .explode("recipients", keep_nulls=False)
        .unnest("recipients")
        .select("request_id", "key", "status")
    )


def assert_sent_once_each(outcomes: pl.DataFrame, log_path: Path, vendor: str) -> dict[str, set[str]]:
    """The flow invariants against the simulator's own log; returns the key sets for more checks.

    No recipient reached the vendor twice (in any applied request, accepted or not); every
    recipient reported accepted was triggered; every one triggered but not reported accepted
    is in doubt; every valid recipient not in doubt and not refused was accepted exactly once.
    """
    applied = processed_entries(log_path, vendor)
    assert applied["key"].is_duplicated().sum() == 0, applied.filter(pl.col("key").is_duplicated())
    triggered = set(applied.filter(pl.col("status") == "accepted")["key"])

    def keys(*statuses: str) -> set[str]:
        return set(outcomes.filter(pl.col("status").is_in(list(statuses)))["recipient_key"])

    accepted, in_doubt, refused = keys("accepted"), keys("in_doubt"), keys("rejected", "failed")
    assert accepted <= triggered, accepted - triggered
    assert triggered - accepted <= in_doubt, "triggered but not reported accepted: must be in doubt"
    assert keys("accepted", "rejected", "failed", "in_doubt") - in_doubt - refused == accepted
    assert outcomes.filter(pl.col("status") == "accepted")["recipient_key"].is_duplicated().sum() == 0
    return {"accepted": accepted, "in_doubt": in_doubt, "refused": refused, "triggered": triggered}
