"""Audiences and specs for the MedChat and Relay tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from sim.config import DEMO_CHATBOT_ID
from tests.support import FAST_LIMITS, with_overrides

MEDCHAT_TOKEN = "medchat-demo-token"
RELAY_API_KEY = "relay-demo-key"
RELAY_TRIGGER = "Delivery-Reminder-2"
RELAY_JOURNEY = "27b88f6f-2261-4dfc-bf04-1bf8309857a9"

# The documented MedChat bulk request (vendor-docs/002).
MEDCHAT_DOCUMENTED: dict[str, Any] = {
    "flowId": None,
    "timeZone": "America/Chicago",
    "instances": [
        {
            "parameters": {
                "patientId": "100000",
                "patientName": "John Smith",
                "appointmentId": "40-XYZ-11123",
                "appointmentDateTime": "2023-12-01 08:00:00",
            }
        },
        {
            "parameters": {
                "patientId": "100001",
                "patientName": "Jane Green",
                "appointmentId": "92-XBX-11934",
                "appointmentDateTime": "2023-12-01 08:30:00",
            }
        },
    ],
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
    return with_overrides(spec, overrides)


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
    return with_overrides(spec, overrides)
