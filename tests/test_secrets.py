"""Secrets never appear in logs, outcomes, artifacts, summaries or error messages.

A run with distinctive credentials (and tokens the simulator issues and expires mid-run),
then every text Volley left behind is searched for them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import polars as pl
import pytest

from flows.campaign import campaign_flow
from sim.testing import SimulatorProcess
from tests.support import audience, responsys_spec, write_spec
from volley import secrets

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
USER = "svc-volley-7Qx2"
PASSWORD = "pw-Zq81-very-secret-77"


def everything_written(results: Path) -> str:
    """Every outcome value, summary and ledger row under the results directory, as text."""
    texts: list[str] = []
    for path in results.rglob("*"):
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            texts.append(frame.select(pl.all().cast(pl.String)).write_csv())
        elif path.is_file():
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(texts)


async def prefect_texts() -> str:
    """Every artifact and log line the Prefect server holds."""
    from prefect.settings import PREFECT_API_URL

    texts: list[str] = []
    async with httpx.AsyncClient(base_url=str(PREFECT_API_URL.value())) as client:
        for kind in ("artifacts", "logs"):
            offset = 0
            while page := (await client.post(f"/{kind}/filter", json={"limit": 200, "offset": offset})).json():
                texts.append(json.dumps(page))
                offset += len(page)
    assert texts, "the server holds the run's artifacts and logs"
    return "\n".join(texts)


async def test_credentials_and_tokens_appear_nowhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RESPONSYS_USER", USER)
    monkeypatch.setenv("RESPONSYS_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    source = tmp_path / "audience.csv"
    audience(6_000).write_csv(source)
    spec = write_spec(tmp_path / "spec.yaml", responsys_spec(source, limits={"timeout_seconds": 2.0}))
    faults = {"5xx": 0.1, "reset": 0.05}
    with SimulatorProcess(users=[f"{USER}={PASSWORD}"], token_ttl=0.4, latency_ms=100, faults=faults, seed=2) as sim:
        summary = await campaign_flow(
            spec_path=str(spec), run_key="k", base_url=sim.responsys_url, results_dir=str(tmp_path / "results")
        )
        assert isinstance(summary, dict)
        counts = summary["counts"]
        assert isinstance(counts, dict)
        assert counts["accepted"] > 0
        tokens = [value for value in secrets._secrets if value not in (PASSWORD,)]
        assert len(tokens) >= 2, "the simulator expired tokens mid-run: several were issued"
        wrong = tmp_path / "wrong.yaml"
        monkeypatch.setenv("RESPONSYS_PASSWORD", "not-the-" + PASSWORD)
        write_spec(wrong, responsys_spec(source))
        refused = await campaign_flow(
            spec_path=str(wrong), run_key="k2", base_url=sim.responsys_url, results_dir=str(tmp_path / "results")
        )
        assert isinstance(refused, dict)
        assert "INVALID_USER_NAME_PASSWORD" in str(refused["aborted"])

    captured = capsys.readouterr()
    haystack = "\n".join(
        [caplog.text, captured.out, captured.err, everything_written(tmp_path / "results"), await prefect_texts()]
    )
    for secret in [PASSWORD, "not-the-" + PASSWORD, *tokens]:
        assert secret not in haystack


def test_the_command_line_never_prints_the_password(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    source = tmp_path / "audience.csv"
    audience(500).write_csv(source)
    spec = write_spec(tmp_path / "spec.yaml", responsys_spec(source))
    env = {**os.environ, "RESPONSYS_USER": USER, "RESPONSYS_PASSWORD": "not-the-" + PASSWORD}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    volley = str(Path(sys.executable).with_name("volley"))
    with SimulatorProcess(users=[f"{USER}={PASSWORD}"]) as sim:
        result = subprocess.run(
            [volley, "run", str(spec), "--base-url", sim.responsys_url, "--results-dir", str(tmp_path / "r")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert "INVALID_USER_NAME_PASSWORD" in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr + everything_written(tmp_path / "r")
