"""The Responsys Trigger REI request as every contender sends it: login, URL, body.

The body is the one Volley's connector builds (same keys, same order, non-ASCII written
as \\uXXXX escapes), so the reference client and the dlt peer move the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

__all__ = [
    "EVENT",
    "LIST_FOLDER",
    "LIST_OBJECT",
    "OPTIONAL_FIELDS",
    "alogin",
    "body_for",
    "login",
    "trigger_headers",
    "trigger_url",
]

EVENT = "Back_In_Stock"
LIST_FOLDER = "My_Folder"
LIST_OBJECT = "My_Profile_List"
# (Responsys optional-data name, audience column)
OPTIONAL_FIELDS = (
    ("PRODUCT_SKU_ID", "product_sku"),
    ("PRODUCT_NAME", "product_name"),
    ("FIRST_NAME", "first_name"),
)
_REI_EVENT = {"eventNumberDataMapping": None, "eventDateDataMapping": None, "eventStringDataMapping": None}
_LIST_NAME = {"folderName": LIST_FOLDER, "objectName": LIST_OBJECT}


def trigger_url(responsys_url: str) -> str:
    return f"{responsys_url}/rest/api/v1.3/events/rei/{EVENT}"


def _login_url(responsys_url: str) -> str:
    return f"{responsys_url}/rest/api/v1.3/auth/token"


def _login_form(user: str, password: str) -> dict[str, str]:
    return {"user_name": user, "password": password, "auth_type": "password"}


def _token(response: httpx.Response) -> str:
    response.raise_for_status()
    return str(response.json()["authToken"])


def login(client: httpx.Client, responsys_url: str, user: str, password: str) -> str:
    return _token(client.post(_login_url(responsys_url), data=_login_form(user, password)))


async def alogin(client: httpx.AsyncClient, responsys_url: str, user: str, password: str) -> str:
    return _token(await client.post(_login_url(responsys_url), data=_login_form(user, password)))


def trigger_headers(token: str) -> dict[str, str]:
    return {"Authorization": token, "Content-Type": "application/json", "Accept": "application/json"}


def _recipient(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "recipient": {"customerId": row["customer_id"], "listName": _LIST_NAME},
        "optionalData": [
            {"name": name, "value": row[column]} for name, column in OPTIONAL_FIELDS if row[column] is not None
        ],
    }


def body_for(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """One request body for up to 200 audience rows (dicts with the audience columns)."""
    document = {"reiEvent": _REI_EVENT, "recipientData": [_recipient(row) for row in rows]}
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode("ascii")
