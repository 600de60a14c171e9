"""`make demo`: start the simulator, run every sample campaign on the embedded Prefect server, stop.

Each campaign's base URL is pointed at the simulator (a free port), with the demo
credentials the simulator knows; a fresh run key per demo, so every run sends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from sim.testing import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
DEMO_ENV = {
    "RESPONSYS_USER": "volley",
    "RESPONSYS_PASSWORD": "volley-secret",
    "MEDCHAT_TOKEN": "medchat-demo-token",
    "RELAY_API_KEY": "relay-demo-key",
    "SPRINKLR_API_KEY": "sprinklr-demo-key",
    "SPRINKLR_ACCESS_TOKEN": "sprinklr-demo-access",
    "SPRINKLR_REFRESH_TOKEN": "sprinklr-demo-refresh",
    "SPRINKLR_CLIENT_SECRET": "sprinklr-demo-secret",
    "INTILERY_AUTH_TOKEN": "intilery-demo-token",
}


def retarget(base_url: str, simulator: str) -> str:
    """The spec's base URL with the simulator's host and port (the path stays)."""
    target = urlsplit(simulator)
    parts = urlsplit(base_url)
    return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))


WAREHOUSE = ROOT / "data" / "samples" / "warehouse.duckdb"


def build_warehouse(target: Path = WAREHOUSE, csv: Path = ROOT / "data" / "samples" / "responsys_audience.csv") -> None:
    """The sample warehouse (DuckDB) for campaigns/responsys_warehouse_lapsed.yaml, from the sample CSV:
    a `customers` table with a segment and a last order date per customer (deterministic)."""
    import duckdb

    temporary = target.with_suffix(".building")
    temporary.unlink(missing_ok=True)
    with duckdb.connect(str(temporary)) as con:
        con.execute(
            """CREATE TABLE customers AS
            SELECT *,
                   ['lapsed', 'active', 'lapsed', 'new'][(row_number() OVER () % 4) + 1] AS segment,
                   DATE '2025-01-01' + ((row_number() OVER () * 37) % 540)::INTEGER AS last_order_date
            FROM read_csv(?, all_varchar = true, header = true)""",
            [str(csv)],
        )
    temporary.replace(target)


def main() -> int:
    if not WAREHOUSE.exists():
        build_warehouse()
        print(f"built {WAREHOUSE.relative_to(ROOT)} from the sample CSV", flush=True)
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in DEMO_ENV.items()}}
    env.setdefault("PREFECT_HOME", str(ROOT / ".volley" / "prefect"))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    run_key = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    volley = str(Path(sys.executable).with_name("volley"))
    failures = 0
    started = time.monotonic()
    with SimulatorProcess(log_path=ROOT / ".volley" / "demo-sim.ndjson") as sim:
        print(f"simulator on {sim.base_url} (log: {sim.log_path})", flush=True)
        for spec_path in sorted((ROOT / "campaigns").glob("*.yaml")):
            spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
            base_url = retarget(spec["connection"]["base_url"], sim.base_url)
            print(f"\n== {spec_path.relative_to(ROOT)} ({spec['vendor']}) -> {base_url}", flush=True)
            command = [volley, "run", str(spec_path.relative_to(ROOT)), "--base-url", base_url, "--run-key", run_key]
            result = subprocess.run(command, cwd=ROOT, env=env, check=False)  # noqa: S603
            failures += result.returncode != 0
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s; outcomes under results/ (run key {run_key})")
    print("summarize them with: .venv/bin/volley report results/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
