"""Rows left in doubt by an earlier run are settled with the vendor's status look-up, where it has one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support import audience, responsys_spec, write_spec
from volley.campaign import Campaign, CampaignRun
from volley.connector import NOT_RECEIVED, LookUpAnswer
from volley.ledger import keys_json
from volley.outcomes import RunIdentity, Status


@pytest.mark.usefixtures("responsys_credentials")
async def test_a_look_up_settles_what_it_can_and_the_rest_stays_in_doubt(tmp_path: Path) -> None:
    source = tmp_path / "audience.csv"
    audience(4).write_csv(source)
    spec = write_spec(tmp_path / "spec.yaml", responsys_spec(source, results_dir=str(tmp_path / "results")))
    campaign = Campaign.load(spec)

    earlier = RunIdentity("r1", "2026-11-23", campaign.spec.name, "responsys")
    ledger = campaign.open_ledger()
    await ledger.claim(earlier)
    await ledger.intend(earlier, "b1", keys_json(["C0000000", "C0000001", "C0000002"]))  # then the run died
    await ledger.finish(earlier, complete=False)
    await ledger.close()

    asked: list[list[str]] = []

    async def look_up(client: httpx.AsyncClient, keys: list[str], since: datetime | None) -> dict[str, Status]:
        asked.append(keys)
        return {"C0000000": Status.ACCEPTED, "C0000001": Status.REJECTED}

    setattr(campaign.connector, "supports_look_up", True)  # noqa: B010
    setattr(campaign.connector, "look_up", look_up)  # noqa: B010
    run = await CampaignRun.start(campaign, "2026-11-23")
    try:
        assert await run.settle_in_doubt() == 2
        plan = next(run.plan_slices())
    finally:
        await run.close()
    assert asked == [["C0000000", "C0000001", "C0000002"]]
    assert plan.decided.select("row_index", "status", "error_code").rows() == [
        (0, "skipped", "already_accepted"),
        (1, "skipped", "rejected_before"),
        (2, "in_doubt", "unanswered_before"),
    ]
    assert [b.recipient_keys for b in plan.batches] == [["C0000003"]]


@pytest.mark.usefixtures("responsys_credentials")
async def test_rows_the_vendor_never_received_are_sent_again_and_each_run_is_asked_with_its_start(
    tmp_path: Path,
) -> None:
    source = tmp_path / "audience.csv"
    audience(5).write_csv(source)
    spec = write_spec(tmp_path / "spec.yaml", responsys_spec(source, results_dir=str(tmp_path / "results")))
    campaign = Campaign.load(spec)

    ledger = campaign.open_ledger()
    first, second = (RunIdentity(run_id, "2026-11-23", campaign.spec.name, "responsys") for run_id in ("r1", "r2"))
    await ledger.claim(first)
    await ledger.intend(first, "b1", keys_json(["C0000000", "C0000001"]))
    await ledger.settle(first, "b1", keys_json(["C0000000", "C0000001"]), ["in_doubt", "in_doubt"])  # answers lost
    await ledger.finish(first, complete=True)
    await ledger.claim(second)
    await ledger.intend(second, "b2", keys_json(["C0000002", "C0000003"]))  # then the run died
    await ledger.finish(second, complete=False)
    starts = await ledger.run_starts(campaign.spec.name, "2026-11-23")
    await ledger.close()
    assert set(starts) == {"r1", "r2"}
    assert all(timedelta(0) <= datetime.now(UTC) - moment < timedelta(minutes=1) for moment in starts.values())

    asked: list[tuple[list[str], datetime | None]] = []
    answers: dict[str, LookUpAnswer] = {
        "C0000000": NOT_RECEIVED,
        "C0000001": Status.FAILED,
        "C0000002": NOT_RECEIVED,
    }

    async def look_up(client: httpx.AsyncClient, keys: list[str], since: datetime | None) -> dict[str, LookUpAnswer]:
        asked.append((keys, since))
        return {key: answers[key] for key in keys if key in answers}

    setattr(campaign.connector, "supports_look_up", True)  # noqa: B010
    setattr(campaign.connector, "look_up", look_up)  # noqa: B010
    run = await CampaignRun.start(campaign, "2026-11-23")
    try:
        assert await run.settle_in_doubt() == 3
        plan = next(run.plan_slices())
        history = await run.ledger.history(campaign.spec.name, "2026-11-23")
    finally:
        await run.close()
    assert asked == [(["C0000000", "C0000001"], starts["r1"]), (["C0000002", "C0000003"], starts["r2"])]
    assert plan.decided.select("row_index", "status", "error_code").rows() == [
        (1, "skipped", "failed_before"),
        (3, "in_doubt", "unanswered_before"),
    ]
    assert [b.recipient_keys for b in plan.batches] == [["C0000000", "C0000002", "C0000004"]]
    # Nothing is recorded for rows never received: until this run sends them the ledger keeps them in doubt.
    assert dict(history.select("recipient_key", "status").iter_rows()) == {
        "C0000000": "in_doubt",
        "C0000001": "failed",
        "C0000002": "unanswered",
        "C0000003": "unanswered",
    }
