"""The cancel flow: the campaign engine run over a file of journey instance ids.

`volley cancel SPEC --instances FILE` and this flow take a trigger campaign's spec and lay
over it: the instances file as the source (a `journey_instance_id` column; CSV, Parquet or
NDJSON), that column as the key, the connector's cancel operation, and the name
`<campaign>-cancel`. The run is then an ordinary campaign run: validated, paced, retried
and recorded the same way, one outcome row per listed instance, under its own run key
(default `cancel-<date>`), so a cancel re-run the same day sends nothing twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Failed

from connectors import connector_class
from flows.campaign import INPUT_ERROR, campaign_flow
from volley.campaign import default_run_key
from volley.errors import InputError, SpecError
from volley.spec import SourceSpec, read_spec

__all__ = ["cancel_flow", "cancel_overrides", "default_cancel_run_key"]


def default_cancel_run_key() -> str:
    return f"cancel-{default_run_key()}"


def cancel_overrides(spec_path: str | Path, instances: str | Path) -> dict[str, Any]:
    """What a cancel run lays over the trigger spec; a SpecError when its vendor cannot cancel."""
    spec = read_spec(spec_path)
    hook = getattr(connector_class(spec.vendor), "cancel_overrides", None)
    if hook is None:
        raise SpecError(f"{spec_path}: vendor {spec.vendor!r} has no cancel operation")
    connector_overrides: dict[str, Any] = hook()
    # The instances file replaces the trigger's source whole (files or a query): None unsets a key.
    source: dict[str, Any] = dict.fromkeys(SourceSpec.model_fields) | {"path": str(instances)}
    return {**connector_overrides, "name": f"{spec.name}-cancel", "source": source}


@flow(name="volley-cancel")
async def cancel_flow(
    spec_path: str,
    instances: str,
    run_key: str | None = None,
    base_url: str | None = None,
    results_dir: str | None = None,
) -> dict[str, object] | State:
    """Cancel every journey instance listed in `instances`, with the connection of `spec_path`."""
    try:
        overrides = cancel_overrides(spec_path, instances)
    except InputError as exc:
        get_run_logger().error("%s", exc)
        return Failed(name=INPUT_ERROR, message=str(exc))
    result: dict[str, object] | State = await campaign_flow.fn(
        spec_path=spec_path,
        run_key=run_key or default_cancel_run_key(),
        base_url=base_url,
        results_dir=results_dir,
        overrides=overrides,
    )
    return result
