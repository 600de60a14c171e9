"""SQL audiences: a query against DuckDB (the embedded default), SQLite or PostgreSQL, read in slices.

A spec's `source` names the database by URI and gives the query; `:name` placeholders in
the query are bound by the driver from `source.params` (the values never become SQL text).
`:run_date` is always available: the run's date (a backfill's day, a schedule's date, or
today in UTC), and a `params` value may hold the template `{run_date}`.

| uri | driver | how it streams |
|---|---|---|
| `duckdb:///path/file.duckdb[?memory_limit=1GB&threads=2]` | duckdb (read only; 256MB unless set) | Arrow batches |
| `sqlite:///path/file.db` | stdlib sqlite3 (read only) | cursor `fetchmany`; every value as text |
| `postgresql://user@host:5432/db[?sslmode=...]` | psycopg 3 (read-only transaction) | server-side cursor `FETCH` |

Three slashes start a relative path, four an absolute one (`duckdb:////srv/wh.duckdb`). A
password never sits in the spec: `source.password: {env: PG_PASSWORD}`, or the whole URI
from the environment (`uri: {env: WAREHOUSE_URI}`). A connection failure, a bad query or a
missing table stops the run before anything is sent: one line with the database's own
words, every secret masked.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import polars as pl

from volley.errors import SourceError, SpecError
from volley.secrets import SecretRef, redact, register_secret
from volley.sources import ROW_INDEX
from volley.spec import SourceSpec, merge

__all__ = [
    "Database",
    "SqlSource",
    "check_uri",
    "compile_placeholders",
    "parse_uri",
    "run_date_for",
    "with_run_date",
]

Dialect = Literal["duckdb", "sqlite", "postgresql"]
ParamStyle = Literal["dollar", "colon", "pyformat"]

_SCHEMES: dict[str, Dialect] = {
    "duckdb": "duckdb",
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
}
_STYLE: dict[Dialect, ParamStyle] = {"duckdb": "dollar", "sqlite": "colon", "postgresql": "pyformat"}
_USAGE = "use duckdb:///file, sqlite:///file or postgresql://user@host:port/db"
RUN_DATE = "run_date"
_TEMPLATE = "{run_date}"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# Text the placeholder scan must leave alone: literals, quoted identifiers, comments, $tag$ bodies.
_PROTECTED = re.compile(
    r"'(?:[^']|'')*'"
    r'|"(?:[^"]|"")*"'
    r"|--[^\n]*"
    r"|/\*.*?\*/"
    r"|\$((?:[A-Za-z_]\w*)?)\$.*?\$\1\$",
    re.DOTALL,
)
# `:name`, not a `::` cast, not `a[1:n]`.
_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


# -- the URI -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """Where the query runs: a dialect, a file path or a connection URI, driver options."""

    dialect: Dialect
    location: str  # file path (duckdb, sqlite) or the connection URI (postgresql)
    options: dict[str, str]
    description: str  # the URI with no password: what every message names
    password: str | None = None


def check_uri(uri: str) -> None:
    """Raise ValueError (for the spec's validation) when the URI is unusable or holds a password."""
    parse_uri(uri, in_spec=True)


def parse_uri(uri: str, password: str | None = None, in_spec: bool = False) -> Database:
    scheme, sep, rest = uri.partition("://")
    dialect = _SCHEMES.get(scheme.lower()) if sep else None
    if dialect is None:
        raise ValueError(f"unknown database {uri.split('://')[0]!r}: {_USAGE}")
    if dialect in ("duckdb", "sqlite"):
        if not rest.startswith("/") or len(rest) < 2:
            raise ValueError(f"{scheme}:// takes a file: {scheme}:///relative/path or {scheme}:////absolute/path")
        location, _, query = rest[1:].partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True))
        return Database(dialect, location, options, f"{scheme}:///{location}")
    parts = urlsplit(uri)
    if not parts.hostname and "host" not in dict(parse_qsl(parts.query)):
        raise ValueError(f"{scheme}:// needs a host: postgresql://user@host:5432/db")
    if parts.password is not None:
        if in_spec:
            raise ValueError(
                "keep the password out of the spec: give it as source.password ({env: NAME}), "
                "or the whole uri as {env: NAME}"
            )
        register_secret(parts.password)
        password = password or parts.password
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    location = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return Database(dialect, location, {}, shown, password)


# -- parameters --------------------------------------------------------------------------------


def compile_placeholders(sql: str, style: ParamStyle) -> tuple[str, list[str]]:
    """`:name` placeholders in the driver's style (quoted text and comments left alone); the names in order.

    The values are passed to the driver beside the text, never formatted into it.
    """
    names: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        if style == "dollar":
            return f"${name}"
        if style == "pyformat":
            return f"%({name})s"
        return f":{name}"

    def code(text: str) -> str:
        if style == "pyformat":
            text = text.replace("%", "%%")
        return _PLACEHOLDER.sub(placeholder, text)

    out: list[str] = []
    position = 0
    for match in _PROTECTED.finditer(sql):
        out.append(code(sql[position : match.start()]))
        kept = match.group(0)
        out.append(kept.replace("%", "%%") if style == "pyformat" else kept)
        position = match.end()
    out.append(code(sql[position:]))
    return "".join(out), names


_SCALARS = (str, int, float, bool, date, datetime)


def _fill(value: Any, run_date: date, where: str) -> Any:
    if value is None or isinstance(value, _SCALARS):
        if isinstance(value, str) and _TEMPLATE in value:
            return run_date if value == _TEMPLATE else value.replace(_TEMPLATE, run_date.isoformat())
        return value
    if isinstance(value, list):
        return [_fill(item, run_date, where) for item in value]
    raise SpecError(f"{where}: a parameter is a text, a number, a date, true/false or a list of them")


def bind_params(names: list[str], params: Mapping[str, Any], run_date: date, description: str) -> dict[str, Any]:
    """The values for the query's placeholders; every placeholder needs one, every value a placeholder."""
    unused = [name for name in params if name not in names]
    if unused:
        raise SpecError(f"{description}: source.params.{unused[0]} is not used by source.sql (no :{unused[0]})")
    values = {name: _fill(value, run_date, f"{description}: source.params.{name}") for name, value in params.items()}
    values.setdefault(RUN_DATE, run_date)
    missing = [name for name in names if name not in values]
    if missing:
        raise SpecError(f"{description}: source.sql uses :{missing[0]}, which source.params does not give")
    return {name: values[name] for name in names}


def run_date_for(run_date: str | None, run_key: str | None) -> str | None:
    """The run date: the one given, else the run key when it is a date (backfills, schedules), else None (today)."""
    if run_date:
        return run_date
    if run_key and _ISO_DATE.match(run_key):
        try:
            return date.fromisoformat(run_key).isoformat()
        except ValueError:
            return None
    return None


def with_run_date(
    overrides: Mapping[str, Any] | None, run_date: str | None, run_key: str | None
) -> dict[str, Any] | None:
    """Spec overrides that set the source's run date (see `run_date_for`); None when there is nothing to lay."""
    day = run_date_for(run_date, run_key)
    if day is None:
        return dict(overrides) if overrides else None
    return merge(dict(overrides or {}), {"source": {"run_date": day}})


# -- drivers -----------------------------------------------------------------------------------


class _ConnectError(Exception):
    """Raised by a driver wrapper for a connection problem it found itself (e.g. no such file)."""


class _Driver(Protocol):
    errors: tuple[type[BaseException], ...]

    def connect(self) -> Any: ...

    def probe(self, connection: Any) -> pl.Schema: ...

    def frames(self, connection: Any, rows: int) -> Iterator[pl.DataFrame]: ...


def _database_file(database: Database) -> str:
    if database.location == ":memory:":
        return database.location
    path = Path(database.location)
    if not path.is_file():
        raise _ConnectError(f"no such database file {path}")
    return str(path)


class _DuckDB:
    def __init__(self, database: Database, sql: str, params: dict[str, Any]) -> None:
        import duckdb

        self.database, self.sql, self.params = database, sql, params
        self.errors: tuple[type[BaseException], ...] = (duckdb.Error, OSError, ValueError)

    def connect(self) -> Any:
        import duckdb

        path = _database_file(self.database)
        config: dict[str, str | bool | int | float | list[str]] = {**DUCKDB_DEFAULTS, **self.database.options}
        return duckdb.connect(path, read_only=path != ":memory:", config=config)

    def _relation(self, connection: Any) -> Any:
        relation = connection.sql(self.sql, params=self.params or None)
        if relation is None:
            raise _QueryError("the query returns no rows (source.sql must be a SELECT)")
        return relation

    def probe(self, connection: Any) -> pl.Schema:
        frame = pl.from_arrow(self._relation(connection).limit(0).to_arrow_table())
        assert isinstance(frame, pl.DataFrame)
        return frame.schema

    def frames(self, connection: Any, rows: int) -> Iterator[pl.DataFrame]:
        for batch in self._relation(connection).to_arrow_reader(rows):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield frame


class _SQLite:
    """SQLite columns have no fixed type: every value is read as text, like a CSV file."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error, ValueError, OverflowError)

    def __init__(self, database: Database, sql: str, params: dict[str, Any]) -> None:
        self.database, self.sql = database, sql
        self.params = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in params.items()}

    def connect(self) -> Any:
        path = _database_file(self.database)
        target = "file::memory:" if path == ":memory:" else f"file:{quote(str(Path(path).resolve()))}?mode=ro"
        return sqlite3.connect(target, uri=True, check_same_thread=False)

    def probe(self, connection: Any) -> pl.Schema:
        # The query is the spec's own text, its values bound by the driver; wrapped to read no rows.
        cursor = connection.execute(f"SELECT * FROM (\n{self.sql}\n) LIMIT 0", self.params)  # noqa: S608
        return pl.Schema({d[0]: pl.String for d in cursor.description})

    def frames(self, connection: Any, rows: int) -> Iterator[pl.DataFrame]:
        cursor = connection.execute(self.sql, self.params)
        schema = pl.Schema({d[0]: pl.String for d in cursor.description})
        while batch := cursor.fetchmany(rows):
            columns = zip(*batch, strict=True)
            yield pl.DataFrame(
                {name: [_as_text(v) for v in values] for name, values in zip(schema, columns, strict=True)},
                schema=schema,
            )


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


# PostgreSQL type OIDs read natively; any other type (numeric, uuid, json, arrays, ...) is read as text.
_PG_TYPES: dict[int, pl.DataType] = {
    16: pl.Boolean(),
    20: pl.Int64(),
    21: pl.Int16(),
    23: pl.Int32(),
    26: pl.Int64(),
    700: pl.Float32(),
    701: pl.Float64(),
    18: pl.String(),
    19: pl.String(),
    25: pl.String(),
    1042: pl.String(),
    1043: pl.String(),
    1082: pl.Date(),
    1083: pl.Time(),
    1114: pl.Datetime("us"),
    1184: pl.Datetime("us", "UTC"),
}
_cursor_ids = itertools.count()
# DuckDB's own default is 80% of the machine's memory: a sort or a join over a large table would
# take it, and the pages it has read stay cached up to it. Bounded, DuckDB spills to disk instead
# (beside the database file). `duckdb:///file?memory_limit=4GB` sets another bound.
DUCKDB_DEFAULTS: dict[str, str] = {"memory_limit": "256MB"}


class _Postgres:
    def __init__(self, database: Database, sql: str, params: dict[str, Any]) -> None:
        import psycopg

        self.database, self.sql, self.params = database, sql, params
        self.errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def connect(self) -> Any:
        import psycopg

        options = dict(parse_qsl(urlsplit(self.database.location).query))
        timeout = None if "connect_timeout" in options else 10
        connection = psycopg.connect(
            self.database.location,
            password=self.database.password,
            connect_timeout=timeout,
            application_name=options.get("application_name", "volley"),
        )
        connection.read_only = True  # an audience query never writes
        return connection

    def _declare(self, connection: Any) -> Any:
        cursor = connection.cursor(name=f"volley_audience_{next(_cursor_ids)}")
        cursor.execute(self.sql, self.params)  # DECLARE: parsed, planned and bound, nothing fetched
        return cursor

    def probe(self, connection: Any) -> pl.Schema:
        from psycopg.types.string import TextLoader

        cursor = self._declare(connection)
        try:
            description = cursor.description or []
        finally:
            cursor.close()
            connection.rollback()
        schema: dict[str, pl.DataType] = {}
        for column in description:
            dtype = _PG_TYPES.get(column.type_code)
            if dtype is None:
                connection.adapters.register_loader(column.type_code, TextLoader)
                dtype = pl.String()
            schema[column.name] = dtype
        return pl.Schema(schema)

    def frames(self, connection: Any, rows: int) -> Iterator[pl.DataFrame]:
        schema = self.probe(connection)  # also sets text loaders for the types read as text
        cursor = self._declare(connection)
        try:
            while batch := cursor.fetchmany(rows):
                yield pl.DataFrame(batch, schema=schema, orient="row")
        finally:
            cursor.close()
            connection.rollback()


class _QueryError(Exception):
    """A problem with the query found before the driver ran it."""


_DRIVERS: dict[Dialect, type[_DuckDB] | type[_SQLite] | type[_Postgres]] = {
    "duckdb": _DuckDB,
    "sqlite": _SQLite,
    "postgresql": _Postgres,
}


# -- the source --------------------------------------------------------------------------------


class SqlSource:
    """An audience from a SQL query, in order, in slices of `source.slice_rows`."""

    def __init__(self, spec: SourceSpec) -> None:
        assert spec.sql is not None, "a SQL source needs source.sql"
        assert spec.uri is not None, "a SQL source needs source.uri"
        self.spec = spec
        password = spec.password.resolve("source.password").get_secret_value() if spec.password else None
        if isinstance(spec.uri, SecretRef):
            uri = spec.uri.resolve("source.uri").get_secret_value()
            try:
                self.database = parse_uri(uri, password)
            except ValueError as exc:
                raise SpecError(f"source.uri ({spec.uri.describe()}): {redact(str(exc))}") from None
        else:
            self.database = parse_uri(spec.uri, password)
        if password:
            register_secret(password)
        self.description = self.database.description
        self.run_date: date = spec.run_date or datetime.now(UTC).date()
        text = spec.sql.strip().rstrip(";").rstrip()
        self.sql, names = compile_placeholders(text, _STYLE[self.database.dialect])
        self.params = bind_params(names, spec.params, self.run_date, self.description)
        self.driver: _DuckDB | _SQLite | _Postgres = _DRIVERS[self.database.dialect](
            self.database, self.sql, self.params
        )
        self._columns: pl.Schema | None = None

    def _errors(self, own: type[Exception]) -> tuple[type[BaseException], ...]:
        return (own, *self.driver.errors)

    def _fail(self, what: str, exc: BaseException) -> SourceError:
        return SourceError(f"{self.description}: {what}: {redact(_first_line(exc))}")

    def _connect(self) -> Any:
        try:
            return self.driver.connect()
        except self._errors(_ConnectError) as exc:
            raise self._fail("cannot connect", exc) from None

    def _probe(self) -> pl.Schema:
        """Connect and bind the query without reading rows: its columns, or a one-line error."""
        if self._columns is None:
            connection = self._connect()
            try:
                self._columns = self.driver.probe(connection)
            except self._errors(_QueryError) as exc:
                raise self._fail("query failed", exc) from None
            finally:
                connection.close()
        return self._columns

    def preflight(self, key: str) -> None:
        columns = self._probe().names()
        if key not in columns:
            shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
            raise SourceError(f"{self.description}: key column {key!r} not found (columns: {shown})")
        if len(set(columns)) != len(columns):
            twice = next(c for c in columns if columns.count(c) > 1)
            raise SourceError(f"{self.description}: the query returns column {twice!r} twice")

    def schema(self) -> pl.Schema:
        return pl.Schema({ROW_INDEX: pl.UInt32(), **self._probe()})

    def iter_slices(self) -> Iterator[pl.DataFrame]:
        columns = self._probe()
        connection = self._connect()
        offset = 0
        try:
            frames = self.driver.frames(connection, self.spec.slice_rows)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except self._errors(_QueryError) as exc:
                    raise self._fail("read failed", exc) from None
                if frame.schema != columns:
                    frame = frame.cast(dict(columns))  # type: ignore[arg-type]
                yield frame.with_row_index(ROW_INDEX, offset=offset)
                offset += frame.height
        finally:
            connection.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__
