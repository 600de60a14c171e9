"""Builders for audiences and specs, and checks against the simulator log, used across the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import yaml

from sim.log import read_log

RESPONSYS_USER = "volley"
RESPONSYS_PASSWORD = "volley-secret"

# Quick retries and short timeouts, so that fault tests take seconds.
FAST_LIMITS: dict[str, Any] = {
    "concurrency": 4,
    "timeout_seconds": 2,
    "backoff_initial_seconds": 0.01,
    "backoff_max_seconds": 0.1,
    "backoff_jitter_seconds": 0.01,
    "throttle_backoff_seconds": 0.2,
    "max_attempts": 10,
}


def audience(rows: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [f"C{start + i:07d}" for i in range(rows)],
            "product_sku": [f"SKU{i % 97:04d}" for i in range(rows)],
            "product_name": [("Crème brûlée" if i % 5 == 0 else "Stonewash Jeans") for i in range(rows)],
        }
    )


def responsys_spec(
    source: Path | str, base_url: str = "http://127.0.0.1:9/responsys", **overrides: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "test-campaign",
        "vendor": "responsys",
        "source": {"path": str(source)},
        "key": "customer_id",
        "vendor_params": {
            "event": "Back_In_Stock",
            "list": {"folder": "My_Folder", "object": "My_Profile_List"},
            "identify_by": "customerId",
            "optional_data": [
                {"name": "PRODUCT_SKU_ID", "column": "product_sku"},
                {"name": "PRODUCT_NAME", "column": "product_name"},
            ],
        },
        "connection": {
            "base_url": base_url,
            "user_name": {"env": "RESPONSYS_USER"},
            "password": {"env": "RESPONSYS_PASSWORD"},
        },
        "limits": dict(FAST_LIMITS),
    }
    return with_overrides(spec, overrides)


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def with_overrides(spec: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`spec` with top-level overrides; a mapping over a mapping is merged one level deep."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def processed_entries(log_path: Path, vendor: str) -> pl.DataFrame:
    """Every recipient of every request the simulator applied (whatever its status): request_id, key, status."""
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
