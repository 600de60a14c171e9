"""Rows left in doubt by an earlier run are settled with the vendor's status look-up, where it has one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support import audience, responsys_spec, write_spec
from volley.campaign import Campaign, CampaignRun
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
    await ledger.intend(earlier, "b1", ["C0000000", "C0000001", "C0000002"])  # then the run died
    await ledger.finish(earlier, complete=False)
    await ledger.close()

    asked: list[list[str]] = []

    async def look_up(client: httpx.AsyncClient, keys: list[str]) -> dict[str, Status]:
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
    assert [b.recipient_keys for s in plan.shards for b in s.batches] == [["C0000003"]]
