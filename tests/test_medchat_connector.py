"""The MedChat connector against the documented request and answers (vendor-docs/002)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from connectors.medchat import MedChatConnector
from flows.cancel import cancel_overrides
from tests.journey_support import MEDCHAT_DOCUMENTED, MEDCHAT_TOKEN, medchat_audience, medchat_spec
from tests.support import with_overrides, write_spec
from volley.batches import Batch
from volley.campaign import Campaign
from volley.errors import SpecError
from volley.resolution import Action
from volley.secrets import redact
from volley.sources import ROW_INDEX

pytestmark = pytest.mark.usefixtures("medchat_token")

BASE = "http://medchat.test"
CHATBOT = "3f6c2a8e-4b1d-4c7e-9a55-0d2e8b7f1a90"


@pytest.fixture
def medchat_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDCHAT_TOKEN", MEDCHAT_TOKEN)


def load(tmp_path: Path, audience: pl.DataFrame | None = None, **overrides: Any) -> Campaign:
    source = tmp_path / "audience.parquet"
    (audience if audience is not None else medchat_audience(3)).write_parquet(source)
    spec = medchat_spec(source, base_url=BASE)
    params = overrides.pop("vendor_params", {})
    spec["vendor_params"] = {**spec["vendor_params"], **params}
    spec = with_overrides(spec, overrides)
    return Campaign.load(write_spec(tmp_path / "spec.yaml", spec))


def connector_of(campaign: Campaign) -> MedChatConnector:
    assert isinstance(campaign.connector, MedChatConnector)
    return campaign.connector


def encode(connector: MedChatConnector, frame: pl.DataFrame) -> list[str]:
    rows = frame.with_row_index(ROW_INDEX).with_columns(pl.col(connector.key).cast(pl.String).alias("recipient_key"))
    return connector.encode_rows(connector.prepare(rows)).to_list()


def send(connector: MedChatConnector, payload: list[str]) -> tuple[str, str, dict[str, Any] | None, dict[str, str]]:
    batch = Batch.of("b1", list(range(len(payload))), [f"k{i}" for i in range(len(payload))], payload)
    headers = connector.build_call(batch, {"Authorization": f"Bearer {MEDCHAT_TOKEN}"})
    body = json.loads(headers.content) if headers.content else None
    return headers.method, headers.url, body, dict(headers.headers)


def documented_rows(**columns: list[Any]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "patient_id": [100000, 100001],  # numbers in the audience, strings to MedChat
            "patient_name": ["John Smith", "Jane Green"],
            "appointment_id": ["40-XYZ-11123", "92-XBX-11934"],
            "appointment_at": [datetime(2023, 12, 1, 8, 0), datetime(2023, 12, 1, 8, 30)],
        }
    )
    return frame.with_columns(pl.Series(name, values) for name, values in columns.items())


def test_the_bulk_request_matches_the_documented_example(tmp_path: Path) -> None:
    connector = connector_of(load(tmp_path))
    method, url, body, headers = send(connector, encode(connector, documented_rows()))
    assert method == "POST"
    assert url == f"{BASE}/chatbotapi/external/orgs/volley-org/journeys/{CHATBOT}/instances/bulk"
    assert body == MEDCHAT_DOCUMENTED
    assert headers["Authorization"] == f"Bearer {MEDCHAT_TOKEN}"
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("values", "parameter"),
    [
        # text as audiences write it: wall-clock time in the journey's zone ...
        (["2023-12-01 08:00", "2023-12-01T08:30:00"], {}),
        # ... or with an offset, moved to the journey's zone (CST is UTC-6 in December)
        (["2023-12-01T14:00:00Z", "2023-12-01 15:30:00+01:00"], {}),
        # an explicit source format
        (["01/12/2023 08:00", "01/12/2023 08:30"], {"source_format": "%d/%m/%Y %H:%M"}),
        # an aware datetime column
        (
            [datetime(2023, 12, 1, 14, 0), datetime(2023, 12, 1, 14, 30)],
            {"source_tz": "UTC"},
        ),
    ],
)
def test_datetimes_are_sent_as_the_journey_expects_on_its_wall_clock(
    tmp_path: Path, values: list[Any], parameter: dict[str, Any]
) -> None:
    source_tz = parameter.pop("source_tz", None)
    params = {**medchat_spec("x")["vendor_params"]["parameters"]}
    params["appointmentDateTime"] = {"column": "appointment_at", "type": "datetime", **parameter}
    connector = connector_of(load(tmp_path, vendor_params={"parameters": params}))
    frame = documented_rows(appointment_at=values)
    if source_tz is not None:
        frame = frame.with_columns(pl.col("appointment_at").dt.replace_time_zone(source_tz))
    _, _, body, _ = send(connector, encode(connector, frame))
    assert body == MEDCHAT_DOCUMENTED


def test_the_journeys_own_datetime_format_and_optional_parameters(tmp_path: Path) -> None:
    params = {
        "appointmentId": "appointment_id",
        "appointmentDateTime": {"column": "appointment_at", "type": "datetime", "format": "%m/%d/%Y %I:%M %p"},
        "note": {"column": "note", "required": False},
    }
    frame = documented_rows().with_columns(pl.Series("note", [None, "bring your card"]))
    connector = connector_of(load(tmp_path, frame, vendor_params={"parameters": params}))
    _, _, body, _ = send(connector, encode(connector, frame))
    assert body is not None
    assert [i["parameters"] for i in body["instances"]] == [
        {"appointmentId": "40-XYZ-11123", "appointmentDateTime": "12/01/2023 08:00 AM", "note": ""},
        {"appointmentId": "92-XBX-11934", "appointmentDateTime": "12/01/2023 08:30 AM", "note": "bring your card"},
    ]


def test_a_subflow_names_its_flow_id_and_no_datetimes_need_no_time_zone(tmp_path: Path) -> None:
    connector = connector_of(
        load(
            tmp_path,
            vendor_params={
                "flow_id": "reschedule",
                "time_zone": None,
                "parameters": {"appointmentId": "appointment_id"},
            },
        )
    )
    _, _, body, _ = send(connector, encode(connector, documented_rows()))
    assert body == {
        "flowId": "reschedule",
        "instances": [
            {"parameters": {"appointmentId": "40-XYZ-11123"}},
            {"parameters": {"appointmentId": "92-XBX-11934"}},
        ],
    }


def test_non_ascii_names_go_out_as_utf8_json(tmp_path: Path) -> None:
    connector = connector_of(load(tmp_path))
    payload = encode(connector, documented_rows(patient_name=["Zoë Müller", 'José "Pepe" Álvarez']))
    _, _, body, _ = send(connector, payload)
    assert body is not None
    assert [i["parameters"]["patientName"] for i in body["instances"]] == ["Zoë Müller", 'José "Pepe" Álvarez']


def response(
    status: int, body: Any = None, text: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def test_204_accepts_every_instance_of_the_request(tmp_path: Path) -> None:
    connector = connector_of(load(tmp_path))
    batch = Batch.of("b", [0, 1, 2], ["a", "b", "c"], ["{}"] * 3)
    answer = response(204)
    assert connector.classify(answer).action is Action.SUCCESS
    results = connector.decode(batch, answer)
    assert results.status == ["accepted"] * 3
    assert results.vendor_ref == [None] * 3


def test_a_400_with_messages_rejects_every_row_with_all_the_messages(tmp_path: Path) -> None:
    connector = connector_of(load(tmp_path))
    batch = Batch.of("b", [0, 1], ["a", "b"], ["{}"] * 2)
    answer = response(400, ["Instance 1: parameter 'patientName' is required.", "Unknown time zone."])
    assert connector.classify(answer).action is Action.SUCCESS, "decoded: the rows are refused, with reasons"
    results = connector.decode(batch, answer)
    assert results.status == ["rejected", "rejected"]
    assert results.error_code == ["REQUEST_REJECTED"] * 2
    assert results.error_message == ["Instance 1: parameter 'patientName' is required.; Unknown time zone."] * 2


@pytest.mark.parametrize(
    ("answer", "action", "code"),
    [
        (response(400, text="<html>bad gateway filter</html>"), Action.FAIL, "HTTP_400"),
        (response(401, {"message": "Authorization has been denied"}), Action.ABORT, "UNAUTHORIZED"),
        (response(403, {"message": "missing scope"}), Action.ABORT, "FORBIDDEN"),
        (response(404, ["Journey not found"]), Action.ABORT, "JOURNEY_NOT_FOUND"),
        (response(429, ["slow down"], headers={"Retry-After": "3"}), Action.THROTTLE, "HTTP_429"),
        (response(503, text="unavailable"), Action.RETRY, "HTTP_503"),
        (response(500, text="boom"), Action.RETRY, "HTTP_500"),
        (response(504, text="gateway timeout"), Action.IN_DOUBT, "HTTP_504"),
    ],
)
def test_answers_are_classified(tmp_path: Path, answer: httpx.Response, action: Action, code: str) -> None:
    resolution = connector_of(load(tmp_path)).classify(answer)
    assert (resolution.action, resolution.error_code) == (action, code)
    if action is Action.THROTTLE:
        assert resolution.wait_seconds == 3.0


def test_the_token_never_shows_in_what_volley_writes(tmp_path: Path) -> None:
    connector = connector_of(load(tmp_path))
    resolution = connector.classify(response(401, text=f"token {MEDCHAT_TOKEN} is not valid"))
    assert resolution.message is not None
    assert MEDCHAT_TOKEN not in redact(resolution.message)


# -- bad input ---------------------------------------------------------------------------------


def test_a_bad_time_zone_is_a_one_line_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, vendor_params={"time_zone": "America/Chicgo"})
    message = str(caught.value)
    assert "\n" not in message
    assert "vendor_params" in message
    assert "'America/Chicgo' is not an IANA time zone name" in message


def test_a_datetime_parameter_needs_a_time_zone(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="time_zone is required: parameter 'appointmentDateTime' is a datetime"):
        load(tmp_path, vendor_params={"time_zone": None})


def test_a_format_that_cannot_format_is_a_spec_error(tmp_path: Path) -> None:
    params = {"appointmentDateTime": {"column": "appointment_at", "type": "datetime", "format": "%Q"}}
    with pytest.raises(SpecError, match="not a usable strftime format"):
        load(tmp_path, vendor_params={"parameters": params})


def test_bad_rows_are_invalid_with_clear_codes(tmp_path: Path) -> None:
    frame = medchat_audience(5).with_columns(
        pl.Series("appointment_at", ["2025-03-14 08:30", "14/03/2025 8:30", "2025-03-14 09:00", None, "tomorrow"]),
        pl.Series("patient_name", ["A", "B", None, "D", "E"]),
    )
    campaign = load(tmp_path, frame)
    plan = campaign.planner("k").plan_slice(frame.with_row_index(ROW_INDEX))
    decided = plan.decided.sort("row_index").select("row_index", "status", "error_code", "error_message").rows()
    assert decided == [
        (
            1,
            "invalid",
            "parameters.appointmentDateTime.datetime",
            "parameters.appointmentDateTime: datetime(expected ISO 8601)",
        ),
        (2, "invalid", "parameters.patientName.not_nullable", "parameters.patientName: not_nullable"),
        (3, "invalid", "parameters.appointmentDateTime.not_nullable", "parameters.appointmentDateTime: not_nullable"),
        (
            4,
            "invalid",
            "parameters.appointmentDateTime.datetime",
            "parameters.appointmentDateTime: datetime(expected ISO 8601)",
        ),
    ]
    assert [len(b) for b in plan.batches] == [1]


def test_a_column_the_parameters_name_must_exist(tmp_path: Path) -> None:
    campaign = load(tmp_path, medchat_audience(3).drop("patient_name"))
    with pytest.raises(Exception, match="column 'patient_name' named in vendor_params is not in the audience"):
        campaign.preflight()


def test_batch_size_defaults_to_100_and_is_capped_by_the_account(tmp_path: Path) -> None:
    assert load(tmp_path).batch_rows == 100
    assert load(tmp_path, batch_size=1000).batch_rows == 1000
    with pytest.raises(SpecError, match="medchat takes at most 1000 recipients a request"):
        load(tmp_path, batch_size=1001)
    raised = load(tmp_path, batch_size=5000, connection={"max_instances_per_request": 5000})
    assert raised.batch_rows == 5000


# -- cancel ------------------------------------------------------------------------------------

INSTANCE = "3acdac77-4429-59bd-96da-d9cdd0133e7b"


def cancel_campaign(tmp_path: Path, ids: list[str | None]) -> Campaign:
    spec = write_spec(tmp_path / "spec.yaml", medchat_spec(tmp_path / "unused.csv", base_url=BASE, batch_size=50))
    instances = tmp_path / "instances.csv"
    pl.DataFrame({"journey_instance_id": ids}, schema={"journey_instance_id": pl.String}).write_csv(instances)
    return Campaign.load(spec, overrides=cancel_overrides(spec, instances))


def test_cancel_deletes_one_execution_per_request(tmp_path: Path) -> None:
    campaign = cancel_campaign(tmp_path, [INSTANCE])
    assert campaign.spec.name == "reminder-cancel"
    assert campaign.spec.key == "journey_instance_id"
    assert campaign.batch_rows == 1
    connector = connector_of(campaign)
    payload = encode(connector, pl.DataFrame({"journey_instance_id": [INSTANCE]}))
    method, url, body, headers = send(connector, payload)
    assert (method, body) == ("DELETE", None)
    assert url == f"{BASE}/chatbotapi/orgs/volley-org/journeys/{CHATBOT}/instances/{INSTANCE}/execution"
    assert headers["Authorization"] == f"Bearer {MEDCHAT_TOKEN}"


def test_cancel_answers_204_cancelled_and_404_unknown(tmp_path: Path) -> None:
    connector = connector_of(cancel_campaign(tmp_path, [INSTANCE]))
    batch = Batch.of("b", [0], [INSTANCE], [INSTANCE])
    assert connector.decode(batch, response(204)).status == ["accepted"]
    unknown = response(404, ["Journey instance was not found or has no running execution."])
    assert connector.classify(unknown).action is Action.SUCCESS
    results = connector.decode(batch, unknown)
    assert (results.status, results.error_code) == (["rejected"], ["INSTANCE_NOT_FOUND"])
    assert results.error_message == ["Journey instance was not found or has no running execution."]
    assert connector.classify(response(401, text="no")).action is Action.ABORT


def test_cancel_ids_that_are_not_uuids_are_invalid(tmp_path: Path) -> None:
    campaign = cancel_campaign(tmp_path, [INSTANCE, "../../orgs/other", "not-a-uuid"])
    campaign.preflight()
    plan = campaign.planner("k").plan_slice(next(iter(campaign.source.iter_slices())))
    assert plan.decided.select("row_index", "error_code").rows() == [
        (1, "journeyInstanceId.str_matches"),
        (2, "journeyInstanceId.str_matches"),
    ]
    assert [b.payload for b in plan.batches] == [[INSTANCE]]


def test_the_instances_file_replaces_a_query_source_whole(tmp_path: Path) -> None:
    source = {"sql": "select * from appointments where day = :day", "uri": "duckdb:///w.duckdb", "params": {"day": "1"}}
    trigger = medchat_spec("unused", base_url=BASE)
    trigger["source"] = source
    spec = write_spec(tmp_path / "spec.yaml", trigger)
    instances = tmp_path / "instances.csv"
    pl.DataFrame({"journey_instance_id": [INSTANCE]}).write_csv(instances)
    campaign = Campaign.load(spec, overrides=cancel_overrides(spec, instances))
    assert campaign.spec.source.path == str(instances)
    assert (campaign.spec.source.sql, campaign.spec.source.uri, campaign.spec.source.params) == (None, None, {})


def test_cancel_needs_a_vendor_that_can_cancel(tmp_path: Path) -> None:
    from tests.support import responsys_spec

    spec = write_spec(tmp_path / "spec.yaml", responsys_spec(tmp_path / "a.csv"))
    with pytest.raises(SpecError, match="vendor 'responsys' has no cancel operation"):
        cancel_overrides(spec, tmp_path / "instances.csv")
