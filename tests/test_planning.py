"""Planning: duplicates are skipped, bad rows become `invalid` outcomes, the rest is batched."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from tests.support import audience, responsys_spec, write_spec
from volley.batches import batch_id_for
from volley.campaign import Campaign
from volley.planning import Planner, _binary_views
from volley.seen import SeenKeys
from volley.sources import ROW_INDEX


@pytest.fixture
def campaign(tmp_path: Path, responsys_credentials: None) -> Campaign:
    audience(1).write_csv(tmp_path / "placeholder.csv")
    return Campaign.load(write_spec(tmp_path / "spec.yaml", responsys_spec(tmp_path / "placeholder.csv")))


def planner(campaign: Campaign, **options: object) -> Planner:
    plan = campaign.planner("2026-11-23")
    for name, value in options.items():
        setattr(plan, name, value)
    return plan


def frame(rows: dict[str, list[object]]) -> pl.DataFrame:
    data = pl.DataFrame(rows, strict=False)
    return data.with_row_index(ROW_INDEX)


def test_duplicate_keys_are_skipped_naming_the_first_row(campaign: Campaign) -> None:
    plan = planner(campaign).plan_slice(
        frame({"customer_id": ["A", "B", "A", "A"], "product_sku": ["1"] * 4, "product_name": ["x"] * 4})
    )
    decided = plan.decided.sort("row_index")
    assert decided.select("row_index", "status", "error_code").rows() == [
        (2, "skipped", "duplicate_key"),
        (3, "skipped", "duplicate_key"),
    ]
    assert decided["error_message"][0] == "customer_id: duplicate of row 0 (same key)"
    assert [b.row_index for b in plan.batches] == [[0, 1]]


def test_duplicates_are_found_across_slices(campaign: Campaign) -> None:
    plan = planner(campaign)
    first = plan.plan_slice(frame({"customer_id": ["A", "B"], "product_sku": ["1", "2"], "product_name": ["x", "y"]}))
    second = plan.plan_slice(
        frame({"customer_id": ["B", "C"], "product_sku": ["1", "2"], "product_name": ["x", "y"]}).with_columns(
            pl.col(ROW_INDEX) + 2
        )
    )
    assert first.decided.height == 0
    assert second.decided.select("row_index", "error_code", "error_message").rows() == [
        (2, "duplicate_key", "customer_id: duplicate of row 1 (same key)")
    ]


def slices_of(keys: list[list[str]]) -> list[pl.DataFrame]:
    """Consecutive slices of one audience: row indexes go on from one slice to the next."""
    slices, offset = [], 0
    for chunk in keys:
        n = len(chunk)
        data: dict[str, list[object]] = {"customer_id": [*chunk], "product_sku": ["1"] * n, "product_name": ["x"] * n}
        slices.append(frame(data).with_columns(pl.col(ROW_INDEX) + offset))
        offset += n
    return slices


THREE_SLICES = [["A", "B", "C", "B"], ["D", "E", "F"], ["G", "A", "H", "E", "A", "I"]]


def decided_across(plan: Planner, keys: list[list[str]]) -> tuple[list[tuple[object, ...]], list[str]]:
    decided, sent = [], []
    for part in slices_of(keys):
        result = plan.plan_slice(part)
        decided += result.decided.sort("row_index").select("row_index", "error_code", "error_message").rows()
        sent += [k for b in result.batches for k in b.recipient_keys]
    return decided, sent


@pytest.mark.parametrize("chunk_keys", [1 << 21, 2], ids=["one-chunk", "many-chunks"])
def test_a_key_repeated_two_slices_later_is_skipped_naming_its_first_row(campaign: Campaign, chunk_keys: int) -> None:
    plan = planner(campaign)
    plan._seen = SeenKeys(chunk_keys=chunk_keys)
    decided, sent = decided_across(plan, THREE_SLICES)
    assert decided == [
        (3, "duplicate_key", "customer_id: duplicate of row 1 (same key)"),
        (8, "duplicate_key", "customer_id: duplicate of row 0 (same key)"),
        (10, "duplicate_key", "customer_id: duplicate of row 5 (same key)"),
        (11, "duplicate_key", "customer_id: duplicate of row 0 (same key)"),
    ]
    assert sent == ["A", "B", "C", "D", "E", "F", "G", "H", "I"]  # every distinct key once, none skipped


def test_keys_new_to_a_slice_and_keys_met_before_repeat_in_the_same_slice(campaign: Campaign) -> None:
    decided, sent = decided_across(planner(campaign), [["A", "B"], ["C", "A", "C", "B", "A", "D"]])
    assert decided == [
        (3, "duplicate_key", "customer_id: duplicate of row 0 (same key)"),
        (4, "duplicate_key", "customer_id: duplicate of row 2 (same key)"),
        (5, "duplicate_key", "customer_id: duplicate of row 1 (same key)"),
        (6, "duplicate_key", "customer_id: duplicate of row 0 (same key)"),
    ]
    assert sent == ["A", "B", "C", "D"]


def test_the_first_row_of_a_key_is_its_lowest_row_index_whatever_the_slice_order(campaign: Campaign) -> None:
    shuffled = frame({"customer_id": ["A", "B", "A"], "product_sku": ["1"] * 3, "product_name": ["x"] * 3})
    plan = planner(campaign).plan_slice(shuffled.with_columns(pl.Series(ROW_INDEX, [7, 3, 5])))
    assert plan.decided.select("row_index", "error_message").rows() == [
        (7, "customer_id: duplicate of row 5 (same key)")
    ]


def test_keys_sharing_a_hash_are_told_apart(campaign: Campaign) -> None:
    """The key store compares the keys themselves: a hash collision never skips a distinct key."""
    plan = planner(campaign)
    plan._seen = SeenKeys(chunk_keys=3, hash_keys=lambda keys: pl.repeat(7, keys.len(), dtype=pl.UInt64, eager=True))
    decided, sent = decided_across(plan, THREE_SLICES)
    assert [(row, message) for row, _, message in decided] == [
        (3, "customer_id: duplicate of row 1 (same key)"),
        (8, "customer_id: duplicate of row 0 (same key)"),
        (10, "customer_id: duplicate of row 5 (same key)"),
        (11, "customer_id: duplicate of row 0 (same key)"),
    ]
    assert sent == ["A", "B", "C", "D", "E", "F", "G", "H", "I"]


def test_many_distinct_keys_over_many_slices_are_never_skipped(campaign: Campaign) -> None:
    plan = planner(campaign)
    plan._seen = SeenKeys(chunk_keys=1000)
    keys = [f"C{i:07d}" for i in range(20_000)]
    decided, sent = decided_across(plan, [keys[i : i + 2_500] for i in range(0, len(keys), 2_500)])
    assert decided == []
    assert sent == keys
    assert len(plan._seen) == len(keys)


def test_the_keys_leave_no_file_behind_and_close_frees_them(campaign: Campaign, tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    with replace(planner(campaign), keys_dir=keys_dir) as plan:
        decided_across(plan, THREE_SLICES)
        assert len(plan._seen) == 9
        assert list(keys_dir.iterdir()) == []  # nameless files: a killed process leaves nothing either
        files = plan._seen._files
        assert files is not None
        if Path("/proc/self/fd").is_dir():  # Linux: the open files are in keys_dir, deleted already
            for handle in files:
                target = os.readlink(f"/proc/self/fd/{handle.fileno()}")
                assert target.startswith(str(keys_dir))
                assert target.endswith("(deleted)")
    assert all(handle.closed for handle in files)
    with pytest.raises(RuntimeError, match="closed"):
        plan.plan_slice(slices_of([["Z"]])[0])


def test_missing_keys_and_missing_identifiers_are_invalid(campaign: Campaign) -> None:
    plan = planner(campaign).plan_slice(
        frame({"customer_id": ["A", None, "  ", "D"], "product_sku": ["1"] * 4, "product_name": ["x"] * 4})
    )
    invalid = plan.decided.filter(pl.col("status") == "invalid").sort("row_index")
    assert invalid.select("row_index", "error_code").rows() == [
        (1, "recipient_key.missing"),
        (2, "recipient_key.missing"),
    ]
    assert plan.batches[0].recipient_keys == ["A", "D"]


def test_wrong_types_and_competing_identifiers_are_invalid_with_the_check(
    tmp_path: Path, responsys_credentials: None
) -> None:
    source = tmp_path / "a.csv"
    audience(1).write_csv(source)
    spec = responsys_spec(source)
    spec["vendor_params"]["identify_by"] = "recipientId"
    campaign = Campaign.load(write_spec(tmp_path / "spec.yaml", spec))
    plan = campaign.planner("k").plan_slice(
        frame(
            {
                "customer_id": ["12", "abc", "13"],
                "emailAddress": [None, None, "x@example.com"],
                "product_sku": ["1", "2", "3"],
                "product_name": ["a", "b", "c"],
            }
        )
    )
    invalid = plan.decided.sort("row_index")
    assert invalid.select("row_index", "status", "error_code").rows() == [
        (1, "invalid", "recipientId.str_matches"),
        (2, "invalid", "exactly_one_identifier"),
    ]
    assert "recipientId: str_matches" in invalid["error_message"][0]
    assert [b.recipient_keys for b in plan.batches] == [["12"]]


HISTORY = pl.DataFrame(
    {
        "recipient_key": ["B", "C", "D", "E", "F"],
        "status": ["accepted", "rejected", "failed", "in_doubt", "unanswered"],
        "run_id": ["r1", "r1", "r1", "r2", "r2"],
    }
)
FIVE: dict[str, list[object]] = {
    "customer_id": ["A", "B", "C", "D", "E", "F"],
    "product_sku": ["1"] * 6,
    "product_name": ["x"] * 6,
}


def test_a_rerun_skips_what_was_settled_and_reports_what_is_in_doubt(campaign: Campaign) -> None:
    plan = planner(campaign, history=HISTORY).plan_slice(frame(FIVE))
    assert plan.decided.select("row_index", "status", "error_code").rows() == [
        (1, "skipped", "already_accepted"),
        (2, "skipped", "rejected_before"),
        (3, "skipped", "failed_before"),
        (4, "in_doubt", "in_doubt_before"),
        (5, "in_doubt", "unanswered_before"),
    ]
    messages = plan.decided["error_message"].to_list()
    assert messages[0] == "accepted by run r1 under run key 2026-11-23"
    assert messages[1].endswith("; --retry-failed sends it again")
    assert messages[4].startswith("sent with no answer recorded (the run stopped) by run r2")
    assert [b.recipient_keys for b in plan.batches] == [["A"]]


def test_retry_failed_and_resend_in_doubt_send_those_rows_again(campaign: Campaign) -> None:
    plan = planner(campaign, history=HISTORY, retry_failed=True, resend_in_doubt=True).plan_slice(frame(FIVE))
    assert plan.decided.select("row_index", "error_code").rows() == [(1, "already_accepted")]
    assert [b.recipient_keys for b in plan.batches] == [["A", "C", "D", "E", "F"]]


def test_batches_hold_at_most_the_vendor_limit_with_stable_ids(campaign: Campaign) -> None:
    rows = audience(450).with_row_index(ROW_INDEX)
    first = planner(campaign).plan_slice(rows)
    again = planner(campaign).plan_slice(rows)
    sizes = [len(b) for b in first.batches]
    assert sizes == [200, 200, 50]
    assert [b.batch_id for b in first.batches] == [b.batch_id for b in again.batches]
    other_key = campaign.planner("another-day").plan_slice(rows)
    assert other_key.batches[0].batch_id != first.batches[0].batch_id


def test_batches_carry_their_joined_fragments_keys_json_and_ids_made_from_their_rows(campaign: Campaign) -> None:
    awkward = pl.when(pl.int_range(pl.len()) == 3).then(pl.lit('C"quoted\\key')).otherwise(pl.col("customer_id"))
    rows = audience(450).with_columns(awkward.alias("customer_id"))
    plan = planner(campaign).plan_slice(rows.with_row_index(ROW_INDEX))
    batches = plan.batches
    assert [len(b) for b in batches] == [200, 200, 50]
    assert batches[0].recipient_keys[3] == 'C"quoted\\key'
    for batch in batches:
        assert batch.joined_payload == ",".join(batch.payload).encode()
        assert json.loads(batch.keys_json) == batch.recipient_keys
        assert batch.batch_id == batch_id_for("2026-11-23", batch.row_index)  # as planned by lists of ints
        assert batch.batch_id.startswith(f"{batch.row_index[0]:010d}-")


def test_byte_limited_vendors_get_batches_that_fit_and_oversized_rows_are_invalid(campaign: Campaign) -> None:
    connector = campaign.connector
    type(connector).max_row_bytes = 260
    type(connector).max_batch_bytes = 600
    try:
        rows = (
            audience(7)
            .with_columns(
                pl.when(pl.int_range(pl.len()) == 4)
                .then(pl.lit("x" * 300))
                .otherwise(pl.col("product_name"))
                .alias("product_name")
            )
            .with_row_index(ROW_INDEX)
        )
        plan = planner(campaign).plan_slice(rows)
    finally:
        type(connector).max_row_bytes = None
        type(connector).max_batch_bytes = None
    assert plan.decided.select("row_index", "error_code").rows() == [(4, "payload.too_large")]
    batches = plan.batches
    assert [i for b in batches for i in b.row_index] == [0, 1, 2, 3, 5, 6]
    for batch in batches:
        assert sum(len(p.encode()) + 1 for p in batch.payload) <= 600
        assert len(batch.joined_payload) + 1 <= 600
    assert len(batches) > 1


def test_binary_views_are_the_values_short_long_and_of_a_slice() -> None:
    values = pl.Series([b"", b"twelve bytes", b"thirteen byte", "é".encode() * 40_000, b"x"], dtype=pl.Binary)
    for series in (values, pl.concat([values, values]).slice(3, 5)):
        assert [bytes(view) for view in _binary_views(series)] == series.to_list()
