"""The campaign spec: YAML validated by pydantic, then by the vendor's own models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from volley.errors import SpecError

__all__ = ["CampaignSpec", "LimitsSpec", "SourceSpec", "format_validation_error", "merge", "read_spec"]

_Format = Literal["csv", "parquet", "ndjson"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """Where the audience comes from: a file path or a glob of files."""

    path: str = Field(min_length=1)
    format: _Format | None = None
    separator: str = Field(default=",", min_length=1, max_length=1)
    slice_rows: int = Field(default=250_000, ge=1_000)


class LimitsSpec(_Strict):
    """How hard Volley may push the vendor, and how patiently it retries."""

    requests_per_second: float | None = Field(default=None, gt=0)
    requests_per_hour: int | None = Field(default=None, gt=0)
    # A run needing more requests than one hour's quota: spread it over hours, or refuse up front.
    quota_policy: Literal["pace", "refuse"] = "pace"
    burst: int = Field(default=1, ge=1)
    concurrency: int = Field(default=8, ge=1, le=256)
    timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_initial_seconds: float = Field(default=0.5, ge=0)
    backoff_max_seconds: float = Field(default=30.0, ge=0)
    backoff_jitter_seconds: float = Field(default=1.0, ge=0)
    throttle_backoff_seconds: float | None = Field(default=None, ge=0)
    max_elapsed_seconds: float | None = Field(default=None, gt=0)


class CampaignSpec(_Strict):
    """A campaign as the user writes it. `vendor_params` and `connection` are checked by the connector."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    vendor: str
    source: SourceSpec
    key: str = Field(min_length=1)
    vendor_params: dict[str, Any] = Field(default_factory=dict)
    connection: dict[str, Any] = Field(default_factory=dict)
    limits: LimitsSpec = LimitsSpec()
    batch_size: int | None = Field(default=None, ge=1)
    shard_batches: int = Field(default=50, ge=1)
    shards_in_flight: int = Field(default=2, ge=1, le=16)
    results_dir: str = "results"
    schedule: str | None = None

    @field_validator("vendor")
    @classmethod
    def _known_vendor(cls, value: str) -> str:
        from connectors import available

        if value not in available():
            raise ValueError(f"unknown vendor {value!r}; expected one of {', '.join(available())}")
        return value


def format_validation_error(source: str, error: ValidationError, prefix: str = "") -> str:
    """One line: the file, the field path and the reason of the first problem."""
    problems = error.errors(include_url=False, include_input=False)
    first = problems[0]
    location = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{source}: {location or '<spec>'}: {first['msg']}{more}"


def merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` laid over it, mappings merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        merged[key] = merge(current, value) if isinstance(current, dict) and isinstance(value, Mapping) else value
    return merged


def read_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> CampaignSpec:
    """Read and validate a spec file (with `overrides` laid over it); every problem is a one-line SpecError."""
    spec_path = Path(path)
    try:
        raw = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{spec_path}: no such spec file") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{spec_path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpecError(f"{spec_path}: {where}{problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{spec_path}: a campaign spec is a YAML mapping")
    if overrides:
        raw = merge(raw, overrides)
    try:
        return CampaignSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_validation_error(str(spec_path), exc)) from None
