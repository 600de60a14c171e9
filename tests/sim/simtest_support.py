"""Helpers shared by the simulator tests (requests, sample bodies)."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx

USER = "volley"
PASSWORD = "volley-secret"
AUTH_PATH = "/rest/api/v1.3/auth/token"
TRIGGER_PATH = "/rest/api/v1.3/events/rei/"

# The documented sample request body (Profile List recipient, customerId 8).
SAMPLE_BODY: dict[str, Any] = {
    "reiEvent": {
        "eventNumberDataMapping": None,
        "eventDateDataMapping": None,
        "eventStringDataMapping": None,
    },
    "recipientData": [
        {
            "recipient": {
                "customerId": 8,
                "emailAddress": None,
                "listName": {
                    "folderName": "FOLDER_NAME",
                    "objectName": "My_Profile_List",
                },
                "recipientId": None,
                "mobileNumber": None,
                "emailFormat": "HTML_FORMAT",
            },
            "optionalData": [{"name": "PRODUCT_NAME", "value": "Stonewash Jeans"}],
        }
    ],
}


def profile_recipient(customer_id: str, **extra: Any) -> dict[str, Any]:
    recipient: dict[str, Any] = {
        "customerId": customer_id,
        "listName": {"folderName": "F", "objectName": "My_Profile_List"},
    }
    recipient.update(extra)
    return {
        "recipient": recipient,
        "optionalData": [{"name": "PRODUCT_NAME", "value": "x"}],
    }


def body_for(recipients: list[dict[str, Any]]) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE_BODY)
    body["recipientData"] = recipients
    return body


def ascii_json(document: Any) -> bytes:
    """JSON with non-ASCII escaped as \\uXXXX, as Responsys requires."""
    return json.dumps(document, ensure_ascii=True).encode()


def login(base: str, *, user: str = USER, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(
        base + AUTH_PATH,
        data={"user_name": user, "password": password, "auth_type": "password"},
    )


def token_for(base: str) -> tuple[str, str]:
    """(authToken, endPoint) after a successful login."""
    answer = login(base)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    return document["authToken"], document["endPoint"]


def trigger(
    endpoint: str,
    token: str,
    body: bytes | dict[str, Any],
    *,
    event: str = "Purchase_Event",
    request_id: str | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else ascii_json(body)
    headers = {"Authorization": token, "Content-Type": "application/json"}
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return httpx.post(
        endpoint + TRIGGER_PATH + event,
        content=content,
        headers=headers,
        timeout=timeout,
    )
