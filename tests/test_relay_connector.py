"""The Relay connector against the documented fields and statuses (vendor-docs/000)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest
from aiohttp.test_utils import TestServer

from connectors.relay import RelayConnector, mask_address
from sim.app import build_app
from sim.config import SimConfig
from tests.journey_support import RELAY_API_KEY, RELAY_TRIGGER, relay_audience, relay_spec
from tests.support import with_overrides, write_spec
from volley.batches import Batch
from volley.campaign import Campaign, CampaignRun
from volley.connector import NOT_RECEIVED
from volley.errors import SpecError
from volley.ledger import keys_json
from volley.outcomes import RunIdentity, Status
from volley.resolution import Action
from volley.secrets import redact
from volley.sources import ROW_INDEX

pytestmark = pytest.mark.usefixtures("relay_api_key")

BASE = "http://relay.test/platform/v3/api"
# The documented examples of the bulk item's fields.
EXAMPLE = {
    "journey_id": "27b88f6f-2261-4dfc-bf04-1bf8309857a9",
    "trigger_id": "7028cb2e-d62d-4d5f-a285-91d25781ea86",
    "ccid": "CRD-98027-004",
    "asset_id": "5da610e9e-896r-3ba4-7a13-321c87c7ff6a",
    "client_message_tag": "campaignA",
}


@pytest.fixture
def relay_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_API_KEY", RELAY_API_KEY)


def load(tmp_path: Path, audience: pl.DataFrame | None = None, **overrides: Any) -> Campaign:
    source = tmp_path / "audience.parquet"
    (audience if audience is not None else relay_audience(3)).write_parquet(source)
    spec = relay_spec(source, base_url=BASE)
    spec["vendor_params"] = {**spec["vendor_params"], **overrides.pop("vendor_params", {})}
    spec = with_overrides(spec, overrides)
    return Campaign.load(write_spec(tmp_path / "spec.yaml", spec))


def connector_of(campaign: Campaign) -> RelayConnector:
    assert isinstance(campaign.connector, RelayConnector)
    return campaign.connector


def encode(connector: RelayConnector, frame: pl.DataFrame) -> list[str]:
    rows = frame.with_row_index(ROW_INDEX).with_columns(pl.col(connector.key).cast(pl.String).alias("recipient_key"))
    return connector.encode_rows(connector.prepare(rows)).to_list()


def call_for(connector: RelayConnector, payload: list[str]) -> tuple[str, dict[str, Any], dict[str, str]]:
    batch = Batch.of("b1", list(range(len(payload))), [f"k{i}" for i in range(len(payload))], payload)
    call = connector.build_call(batch, {"xx-relay-api-key": RELAY_API_KEY})
    assert call.method == "POST"
    assert call.content is not None
    return call.url, json.loads(call.content), dict(call.headers)


def example_connector(tmp_path: Path, **params: Any) -> RelayConnector:
    vendor_params = {
        "trigger_id": EXAMPLE["trigger_id"],
        "journey_id": EXAMPLE["journey_id"],
        "asset_id": EXAMPLE["asset_id"],
        "client_message_tag": EXAMPLE["client_message_tag"],
        "inputs": ["first_name", {"name": "order", "column": "order_id"}],
        **params,
    }
    return connector_of(load(tmp_path, vendor_params=vendor_params))


def test_the_bulk_request_carries_the_documented_fields(tmp_path: Path) -> None:
    connector = example_connector(tmp_path)
    frame = pl.DataFrame({"ccid": [EXAMPLE["ccid"]], "first_name": ["Chloé"], "order_id": ["SO-1"]})
    url, body, headers = call_for(connector, encode(connector, frame))
    assert url == f"{BASE}/messaging/client/volley-demo/journey_trigger"
    assert headers["xx-relay-api-key"] == RELAY_API_KEY
    assert body == {
        "batch": [
            {
                "trigger_id": EXAMPLE["trigger_id"],
                "ccid": EXAMPLE["ccid"],
                "journey_id": EXAMPLE["journey_id"],
                "asset_id": EXAMPLE["asset_id"],
                "client_message_tag": "campaignA",
                "input_parameters": {"input_first_name": "Chloé", "input_order": "SO-1"},
                "lb_name": "volley",
                "lb_source": "delivery",
            }
        ]
    }


def test_single_mode_puts_trigger_and_customer_in_the_path(tmp_path: Path) -> None:
    campaign = load(tmp_path, vendor_params={"mode": "single"})
    assert campaign.batch_rows == 1
    connector = connector_of(campaign)
    frame = pl.DataFrame({"ccid": ["CRD/98027 004"], "first_name": ["Bo"], "order_id": ["SO-2"]})
    url, body, _ = call_for(connector, encode(connector, frame))
    assert url == f"{BASE}/messaging/client/volley-demo/journey_trigger/{RELAY_TRIGGER}/customer/CRD%2F98027%20004"
    assert body == {
        "input_parameters": {"input_first_name": "Bo", "input_order_id": "SO-2"},
        "lb_name": "volley",
        "lb_source": "delivery",
    }
    with pytest.raises(SpecError, match="relay takes at most 1 recipients a request"):
        load(tmp_path, vendor_params={"mode": "single"}, batch_size=2)


def test_bulk_is_the_default_at_most_100_a_request(tmp_path: Path) -> None:
    assert load(tmp_path).batch_rows == 100
    with pytest.raises(SpecError, match="relay takes at most 100 recipients a request"):
        load(tmp_path, batch_size=101)


def test_empty_inputs_are_left_out_and_input_columns_are_forwarded(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "ccid": ["a", "b", "c"],
            "first_name": ["Ana", None, "  "],
            "order_id": [None, "SO-2", None],
            "input_store": ["Leeds", None, "York"],
            "tag": [None, "t-1", None],
        }
    )
    connector = connector_of(load(tmp_path, frame, vendor_params={"client_message_tag_column": "tag"}))
    items = [json.loads(fragment) for fragment in encode(connector, frame)]
    assert [i.get("input_parameters") for i in items] == [
        {"input_first_name": "Ana", "input_store": "Leeds"},
        {"input_order_id": "SO-2"},
        {"input_store": "York"},
    ]
    assert [i.get("client_message_tag") for i in items] == [None, "t-1", None]
    assert "client_message_tag" not in items[0], "left out, not null"
    quiet = connector_of(load(tmp_path, frame, vendor_params={"forward_input_columns": False}))
    assert "input_store" not in json.loads(encode(quiet, frame)[0])["input_parameters"]


def test_lb_fields_can_be_nested_under_a_named_object(tmp_path: Path) -> None:
    connector = connector_of(
        load(tmp_path, connection={"lb_object": "launched_by"}, vendor_params={"lb_source": "crm"})
    )
    item = json.loads(encode(connector, relay_audience(1))[0])
    assert item["launched_by"] == {"lb_name": "volley", "lb_source": "crm"}
    assert "lb_name" not in item


# -- answers -----------------------------------------------------------------------------------


def channel(addr: str, status: str) -> dict[str, str]:
    return {"channel_addr": addr, "channel_type": "sms", "status": status}


def result(ccid: str, status: str, *channels: dict[str, str]) -> dict[str, Any]:
    return {
        "trigger_id": RELAY_TRIGGER,
        "ccid": ccid,
        "message": {"status": status},
        "notification": {"results": list(channels)},
    }


def batch_of(*ccids: str) -> Batch:
    payload = [orjson.dumps({"trigger_id": RELAY_TRIGGER, "ccid": c}).decode() for c in ccids]
    return Batch.of("b", list(range(len(ccids))), list(ccids), payload)


def test_message_statuses_map_to_outcomes_with_channel_results_kept_masked(tmp_path: Path) -> None:
    connector = connector_of(load(tmp_path))
    answer = httpx.Response(
        200,
        json={
            "results": [
                result("a", "sent", channel("+15551234567", "ok"), channel("+15557654321", "no-consent")),
                result("b", "not-sent"),
                result("c", "error"),
                result("d", "sent", channel("+15550001111", "channel-deactivated")),
            ]
        },
    )
    assert connector.classify(answer).action is Action.SUCCESS
    rows = connector.decode(batch_of("a", "b", "c", "d"), answer)
    assert rows.status == ["accepted", "rejected", "failed", "accepted"]
    assert rows.error_code == [None, "NOT_SENT", "MESSAGE_ERROR", None]
    assert rows.error_message[1] == "not-sent"
    assert rows.details is not None
    assert json.loads(str(rows.details[0])) == {
        "message_status": "sent",
        "notifications": [
            {"channel_addr": "***4567", "channel_type": "sms", "status": "ok"},
            {"channel_addr": "***4321", "channel_type": "sms", "status": "no-consent"},
        ],
    }
    assert all("555123" not in d and "555765" not in d for d in rows.details if d)
    # What an analyst does with them: count no-consent numbers.
    outcomes = pl.DataFrame({"details": rows.details})
    notifications = pl.Struct({"channel_addr": pl.String, "channel_type": pl.String, "status": pl.String})
    per_channel = (
        outcomes.select(
            pl.col("details")
            .str.json_decode(pl.Struct({"message_status": pl.String, "notifications": pl.List(notifications)}))
            .struct.field("notifications")
        )
        .explode("notifications")
        .unnest("notifications")
    )
    assert per_channel.filter(pl.col("status") == "no-consent").height == 1


def test_a_single_answer_is_one_customer(tmp_path: Path) -> None:
    connector = connector_of(load(tmp_path, vendor_params={"mode": "single"}))
    answer = httpx.Response(
        200, json={"message": {"status": "not-sent"}, "notification": {"results": [channel("1234", "no-consent")]}}
    )
    rows = connector.decode(batch_of("a"), answer)
    assert (rows.status, rows.error_code) == (["rejected"], ["NOT_SENT"])
    assert rows.error_message == ["not-sent; channels: no-consent"]
    assert rows.details is not None
    assert json.loads(str(rows.details[0]))["notifications"][0]["channel_addr"] == "***"


@pytest.mark.parametrize(
    "body",
    [
        {"results": [result("a", "sent")]},  # one result for two customers
        {"results": [result("b", "sent"), result("a", "sent")]},  # not in request order
        {"unexpected": True},
        [result("a", "sent"), result("b", "sent")],
    ],
)
def test_an_answer_that_does_not_line_up_with_the_request_is_in_doubt(tmp_path: Path, body: Any) -> None:
    rows = connector_of(load(tmp_path)).decode(batch_of("a", "b"), httpx.Response(200, json=body))
    assert rows.status == ["in_doubt", "in_doubt"]
    assert rows.error_code == ["UNREADABLE_ANSWER"] * 2


def test_an_unknown_message_status_is_in_doubt(tmp_path: Path) -> None:
    rows = connector_of(load(tmp_path)).decode(
        batch_of("a"), httpx.Response(200, json={"results": [result("a", "queued")]})
    )
    assert rows.status == ["in_doubt"]


@pytest.mark.parametrize(
    ("status", "body", "action", "code"),
    [
        (400, {"status": 400, "error": "Bad Request", "message": "more than 100"}, Action.FAIL, "BAD_REQUEST"),
        (401, {"message": "missing or unknown API key"}, Action.ABORT, "UNAUTHORIZED"),
        (403, {"message": "not this client"}, Action.ABORT, "FORBIDDEN"),
        (404, {"message": "trigger_id 'x' not found"}, Action.FAIL, "NOT_FOUND"),
        (409, {"message": "conflict"}, Action.FAIL, "CONFLICT"),
        (500, {"message": "unexpected; please retry"}, Action.RETRY, "SERVER_ERROR"),
        (503, None, Action.RETRY, "HTTP_503"),
        (429, None, Action.THROTTLE, "HTTP_429"),
    ],
)
def test_answers_are_classified(tmp_path: Path, status: int, body: Any, action: Action, code: str) -> None:
    answer = httpx.Response(status, json=body) if body is not None else httpx.Response(status, text="")
    resolution = connector_of(load(tmp_path)).classify(answer)
    assert (resolution.action, resolution.error_code) == (action, code)
    if body is not None:
        assert resolution.message == body["message"]


def test_the_api_key_never_shows_in_what_volley_writes(tmp_path: Path) -> None:
    resolution = connector_of(load(tmp_path)).classify(
        httpx.Response(401, json={"message": f"key {RELAY_API_KEY} unknown"})
    )
    assert resolution.message is not None
    assert RELAY_API_KEY not in redact(resolution.message)


def test_masking_keeps_the_last_four_characters() -> None:
    assert mask_address("+15551234567") == "***4567"
    assert mask_address("1234") == "***"
    assert mask_address(None) is None


# -- bad input ---------------------------------------------------------------------------------


def plan(campaign: Campaign, frame: pl.DataFrame) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    result = campaign.planner("k").plan_slice(frame.with_row_index(ROW_INDEX))
    decided = result.decided.sort("row_index").select("row_index", "status", "error_code").rows()
    sent = [json.loads(f) for b in result.batches for f in b.payload]
    return decided, sent


def test_a_101_character_ccid_is_invalid_and_100_is_fine(tmp_path: Path) -> None:
    frame = relay_audience(3).with_columns(pl.Series("ccid", ["C" * 100, "C" * 101, "ok"]))
    decided, sent = plan(load(tmp_path, frame), frame)
    assert decided == [(1, "invalid", "ccid.str_length")]
    assert [item["ccid"] for item in sent] == ["C" * 100, "ok"]


def test_trigger_ids_and_message_tags_from_columns_are_checked_per_row(tmp_path: Path) -> None:
    frame = relay_audience(3).with_columns(
        pl.Series("trigger", [RELAY_TRIGGER, "T" * 101, RELAY_TRIGGER]),
        pl.Series("tag", ["t", "t", "x" * 101]),
    )
    params = {"trigger_id": None, "trigger_id_column": "trigger", "client_message_tag_column": "tag"}
    decided, sent = plan(load(tmp_path, frame, vendor_params=params), frame)
    assert decided == [(1, "invalid", "trigger_id.str_length"), (2, "invalid", "client_message_tag.str_length")]
    assert len(sent) == 1


def test_an_input_that_clashes_with_an_input_column_of_the_audience(tmp_path: Path) -> None:
    frame = relay_audience(4).with_columns(pl.Series("input_order_id", [None, "SO-700001", "SO-000000", None]))
    decided, sent = plan(load(tmp_path, frame), frame)
    assert decided == [(2, "invalid", "input_order_id.key_clash")]
    assert [item["input_parameters"]["input_order_id"] for item in sent] == ["SO-700000", "SO-700001", "SO-700003"]
    campaign = load(tmp_path, frame)
    message = campaign.planner("k").plan_slice(frame.with_row_index(ROW_INDEX)).decided["error_message"][0]
    assert message == "input_order_id: key_clash(column 'order_id' vs audience column 'input_order_id')"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"inputs": ["order_id", {"name": "input_order_id", "column": "first_name"}]},
            "are both sent as 'input_order_id'",
        ),
        ({"inputs": ["first name"]}, "would be sent as 'input_first name'"),
        ({"trigger_id": "T" * 101}, "at most 100 characters"),
        ({"trigger_id": None}, "exactly one of 'trigger_id' or 'trigger_id_column'"),
        ({"client_message_tag": "x" * 101}, "at most 100 characters"),
        ({"mode": "sometimes"}, "'bulk' or 'single'"),
    ],
)
def test_unusable_params_are_one_line_spec_errors(tmp_path: Path, params: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, vendor_params=params)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


# -- status look-up ----------------------------------------------------------------------------

SINCE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # when the run that sent the rows started
STATUS_PATH = "/platform/v3/api/experience-status/1.0/client/volley-demo/customer/{}/trigger_status"


def trigger(status: str, minutes: float = 1, trigger_id: str = RELAY_TRIGGER) -> dict[str, str]:
    at = (SINCE + timedelta(minutes=minutes)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"trigger_id": trigger_id, "status": status, "triggered_at": at}


def triggers(ccid: str, *found: dict[str, str]) -> tuple[int, Any]:
    return 200, {"ccid": ccid, "triggers": list(found)}


# ccid -> (HTTP status, answer; None: the connection is reset), what the look-up makes of it.
LOOK_UPS: dict[str, tuple[tuple[int, Any] | None, Any]] = {
    "sent": (triggers("sent", trigger("sent")), Status.ACCEPTED),
    "not-sent": (triggers("not-sent", trigger("not-sent")), Status.REJECTED),
    "error": (triggers("error", trigger("error")), Status.FAILED),
    "dropped-as-duplicate": (
        triggers("dropped-as-duplicate", trigger("sent"), trigger("not-sent", 2)),
        Status.ACCEPTED,
    ),
    "error-then-not-sent": (triggers("error-then-not-sent", trigger("not-sent", 2), trigger("error")), Status.REJECTED),
    "never": (triggers("never"), NOT_RECEIVED),
    "yesterday": (triggers("yesterday", trigger("sent", -24 * 60)), NOT_RECEIVED),
    "clock-behind": (triggers("clock-behind", trigger("sent", -3)), Status.ACCEPTED),
    "CRD/1 2": (triggers("CRD/1 2", trigger("sent")), Status.ACCEPTED),
    "other-trigger-only": (triggers("other-trigger-only", trigger("sent", trigger_id="Other-1")), None),
    "pending": (triggers("pending", trigger("queued")), None),
    "no-time": (triggers("no-time", {"trigger_id": RELAY_TRIGGER, "status": "sent"}), None),
    "someone-else": (triggers("not-me"), None),
    "unknown-ccid": ((404, {"message": "customer not found"}), None),
    "server-error": ((503, {"message": "try later"}), None),
    "throttled": ((429, None), None),
    "unreadable": ((200, "<html>oops</html>"), None),
    "reset": (None, None),
}


class FakeRelayStatus:
    """Answers the status look-up from LOOK_UPS (plus `bulk-*`: never triggered); counts what is in flight."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.keys: set[str | None] = set()
        self.in_flight = self.most_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.raw_path.decode())
        self.keys.add(request.headers.get("xx-relay-api-key"))
        ccid = request.url.path.split("/customer/")[1].removesuffix("/trigger_status")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)
        finally:
            self.in_flight -= 1
        if ccid.startswith("bulk-"):
            return httpx.Response(200, json={"ccid": ccid, "triggers": []})
        answer = LOOK_UPS[ccid][0]
        if answer is None:
            raise httpx.ReadError("connection reset by peer", request=request)
        status, body = answer
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status)


async def test_the_look_up_reads_each_customer_s_trigger_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connector = connector_of(load(tmp_path))
    assert connector.supports_look_up
    fake = FakeRelayStatus()
    keys = [*LOOK_UPS, *(f"bulk-{n}" for n in range(30))]
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
        with caplog.at_level(logging.WARNING, logger="volley.connectors.relay"):
            answers = await connector.look_up(client, keys, SINCE)
    expected = {ccid: outcome for ccid, (_, outcome) in LOOK_UPS.items() if outcome is not None}
    assert {k: v for k, v in answers.items() if not k.startswith("bulk-")} == expected
    assert [answers[f"bulk-{n}"] for n in range(30)] == [NOT_RECEIVED] * 30
    assert len(fake.paths) == len(keys), "one request per customer"
    assert STATUS_PATH.format("CRD%2F1%202") in fake.paths
    assert fake.keys == {RELAY_API_KEY}
    assert 1 < fake.most_in_flight <= connector.look_up_concurrency
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("relay status look-up: 9 of 48 rows stay in doubt (no clear answer x5")
    for reason in ("HTTP 404 x1", "HTTP 503 x1", "HTTP 429 x1", "ReadError x1"):
        assert reason in warnings[0]
    assert RELAY_API_KEY not in caplog.text


async def test_without_the_run_s_start_any_trigger_on_record_counts(tmp_path: Path) -> None:
    connector = connector_of(load(tmp_path))
    async with httpx.AsyncClient(transport=httpx.MockTransport(FakeRelayStatus())) as client:
        answers = await connector.look_up(client, ["yesterday", "no-time", "never"])
    assert answers == {"yesterday": Status.ACCEPTED, "no-time": Status.ACCEPTED, "never": NOT_RECEIVED}


async def test_the_look_up_can_live_on_another_host(tmp_path: Path) -> None:
    connector = connector_of(load(tmp_path, connection={"status_base_url": "https://status.relay.test/api/"}))
    fake = FakeRelayStatus()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
        assert await connector.look_up(client, ["never"], SINCE) == {"never": NOT_RECEIVED}
    assert fake.paths == ["/api/experience-status/1.0/client/volley-demo/customer/never/trigger_status"]


@pytest.mark.parametrize(
    "vendor_params",
    [{"ccid_column": "order_id"}, {"trigger_id": None, "trigger_id_column": "first_name"}],
)
async def test_rows_stay_in_doubt_when_a_key_does_not_name_one_trigger_of_one_ccid(
    tmp_path: Path, vendor_params: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    connector = connector_of(load(tmp_path, vendor_params=vendor_params))
    fake = FakeRelayStatus()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
        assert await connector.look_up(client, ["sent", "never"], SINCE) == {}
    assert fake.paths == []
    assert "relay status look-up skipped" in caplog.text


async def test_a_re_run_settles_rows_in_doubt_with_the_simulator_s_record(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "ccid": ["CRD-0", "CRD-1", "NOSEND-2", "CRD-3", "CRD-4"],
            "first_name": ["Ana", "Bo", "Cy", "Di", "Ed"],
            "order_id": ["SO-0", "SO-1", "SO-2", "SO-3", "SO-4"],
        }
    )
    async with TestServer(build_app(SimConfig())) as server:
        base = str(server.make_url("/relay/platform/v3/api"))
        source = tmp_path / "audience.parquet"
        frame.write_parquet(source)
        spec = relay_spec(source, base_url=base, results_dir=str(tmp_path / "results"))
        campaign = Campaign.load(write_spec(tmp_path / "spec.yaml", spec))
        connector = connector_of(campaign)
        setattr(connector, "look_up_clock_skew", timedelta(0))  # noqa: B010 (one clock here)
        trigger_url = f"{base}/messaging/client/volley-demo/journey_trigger"

        async def trigger_directly(*ccids: str) -> None:
            batch = [{"trigger_id": RELAY_TRIGGER, "ccid": ccid} for ccid in ccids]
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    trigger_url, json={"batch": batch}, headers={"xx-relay-api-key": RELAY_API_KEY}
                )
            assert answer.status_code == 200

        await trigger_directly("CRD-0")  # an earlier run key's trigger, before this run key's first run
        await asyncio.sleep(0.01)
        ledger = campaign.open_ledger()
        earlier = RunIdentity("r1", "day", "delivery", "relay")
        await ledger.claim(earlier)
        await ledger.intend(earlier, "b1", keys_json(["CRD-0", "CRD-1", "NOSEND-2", "CRD-3"]))
        await asyncio.sleep(0.01)
        await trigger_directly("CRD-1", "NOSEND-2")  # reached Relay; then the run died (CRD-0, CRD-3 never left)
        await ledger.finish(earlier, complete=False)
        await ledger.close()

        run = await CampaignRun.start(campaign, "day")
        try:
            assert await run.settle_in_doubt() == 4
            plan = next(run.plan_slices())
        finally:
            await run.close()
    assert plan.decided.select("recipient_key", "status", "error_code").rows() == [
        ("CRD-1", "skipped", "already_accepted"),
        ("NOSEND-2", "skipped", "rejected_before"),
    ]
    assert [b.recipient_keys for b in plan.batches] == [["CRD-0", "CRD-3", "CRD-4"]]
