"""The campaign spec: YAML validated by pydantic, then by the vendor's own models."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from volley.errors import SpecError
from volley.secrets import SecretRef

__all__ = [
    "CampaignSpec",
    "LedgerSpec",
    "LimitsSpec",
    "ScheduleSpec",
    "SourceSpec",
    "format_validation_error",
    "merge",
    "read_spec",
]

_Format = Literal["csv", "parquet", "ndjson"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """Where the audience comes from: a file path or a glob of files, or a SQL query (`sql` + `uri`).

    A query's `:name` placeholders are bound by the database driver from `params` (never
    formatted into the text); a `params` value may hold `{run_date}`, and `:run_date` is
    always available: the run date (a backfill's day, a schedule's date) or today (UTC).
    """

    path: str | None = Field(default=None, min_length=1)
    format: _Format | None = None
    separator: str = Field(default=",", min_length=1, max_length=1)
    slice_rows: int = Field(default=100_000, ge=1_000)
    sql: str | None = Field(default=None, min_length=1)
    uri: str | SecretRef | None = None
    password: SecretRef | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    run_date: date | None = None

    @field_validator("uri")
    @classmethod
    def _known_database(cls, value: str | SecretRef | None) -> str | SecretRef | None:
        if isinstance(value, str):
            from volley.warehouse import check_uri

            check_uri(value)
        return value

    @model_validator(mode="after")
    def _files_or_query(self) -> SourceSpec:
        if (self.path is None) == (self.sql is None):
            raise ValueError("give exactly one of 'path' (files) or 'sql' (a query, with 'uri')")
        if self.sql is not None and self.uri is None:
            raise ValueError("'sql' needs 'uri' (duckdb:///file, sqlite:///file or postgresql://user@host:port/db)")
        if self.path is not None and (self.uri is not None or self.params or self.password is not None):
            raise ValueError("'uri', 'params' and 'password' go with 'sql', not with 'path'")
        return self


class LimitsSpec(_Strict):
    """How hard Volley may push the vendor, and how patiently it retries."""

    requests_per_second: float | None = Field(default=None, gt=0)
    requests_per_hour: int | None = Field(default=None, gt=0)
    # A run needing more requests than one hour's quota: spread it over hours, or refuse up front.
    quota_policy: Literal["pace", "refuse"] = "pace"
    # Requests that may go back to back after a stall: default a tenth of a second of budget,
    # so a late wake-up of the event loop is caught up instead of lost. 1 paces strictly.
    burst: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=8, ge=1, le=256)
    timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_initial_seconds: float = Field(default=0.5, ge=0)
    backoff_max_seconds: float = Field(default=30.0, ge=0)
    backoff_jitter_seconds: float = Field(default=1.0, ge=0)
    throttle_backoff_seconds: float | None = Field(default=None, ge=0)
    max_elapsed_seconds: float | None = Field(default=None, gt=0)


class LedgerSpec(_Strict):
    """Where the send ledger lives: SQLite beside the outcomes by default, or PostgreSQL by URL."""

    url: str | None = Field(default=None, pattern=r"^(postgres(ql)?://|sqlite:///)")
    password: SecretRef | None = None


def _check_cron(value: str) -> str:
    from croniter import croniter  # type: ignore[import-untyped]

    if not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression (e.g. '0 6 * * *')")
    return value


class ScheduleSpec(_Strict):
    """When `volley serve` / `volley deploy` run the campaign: a cron line read in a time zone.

    A scheduled run's run key (and run date) is its scheduled date in that time zone.
    """

    cron: str = Field(min_length=1)
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        return _check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. 'Europe/London')") from None
        return value


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
    # One Prefect task, fed across slices. 50 was 16% slower than 200 (300k-row run); 500 halved the
    # embedded Prefect server's CPU during a 1M-row run (3.3-3.6 -> 1.6-2.0 s), CPU the vendor calls
    # share; each task run still cost it ~24 ms and the run ~15 ms (measured with 100-batch shards).
    shard_batches: int = Field(default=2_500, ge=1)
    shards_in_flight: int = Field(default=2, ge=1, le=16)
    results_dir: str = "results"
    ledger: LedgerSpec = LedgerSpec()
    schedule: ScheduleSpec | None = None  # a plain cron line is read as {cron: LINE, timezone: UTC}

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_in_full(cls, value: object) -> object:
        return {"cron": value} if isinstance(value, str) else value

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
    """`base` with `overrides` laid over it, mappings merged key by key; a None override unsets
    the key (its default applies), so an override can replace a mapping (a cancel run's source)."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if value is None:
            merged.pop(key, None)
            continue
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
