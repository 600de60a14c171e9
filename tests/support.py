"""Builders for audiences and specs used across the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import yaml

RESPONSYS_USER = "volley"
RESPONSYS_PASSWORD = "volley-secret"


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
        "limits": {
            "concurrency": 4,
            "timeout_seconds": 2,
            "backoff_initial_seconds": 0.01,
            "backoff_max_seconds": 0.1,
            "backoff_jitter_seconds": 0.01,
            "throttle_backoff_seconds": 0.2,
            "max_attempts": 10,
        },
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
