"""The schema cache: tables, columns and functions of the `public` schema, read from pg_catalog.

Requests are checked against it (unknown table 404, unknown column 400, rpc argument types) without a catalogue
query per request; a miss, or `NOTIFY pgrst, 'reload schema'`, reloads it, so objects created after start are found.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from supabase_local.rest.errors import RestError, logger, unknown_table

SCHEMA = "public"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type() output, e.g. "timestamp with time zone": PostgreSQL's own spelling, safe in a cast


@dataclass(frozen=True)
class Relation:
    """A table or view, or the row type a function returns: what select, filters and order may name."""

    name: str
    columns: Mapping[str, Column]
    primary_key: tuple[str, ...] = ()

    def column(self, name: str) -> Column | None:
        return self.columns.get(name)


@dataclass(frozen=True)
class Argument:
    name: str
    type: str
    has_default: bool


@dataclass(frozen=True)
class Function:
    name: str
    arguments: tuple[Argument, ...]
    returns_set: bool
    # "void", "scalar" (one value per call or per row) or "composite" (rows with columns, see `result`)
    return_kind: str
    return_type: str
    result: Relation | None = None

    def accepts(self, names: set[str]) -> bool:
        known = {argument.name for argument in self.arguments}
        required = {argument.name for argument in self.arguments if not argument.has_default}
        return names <= known and required <= names


@dataclass(frozen=True)
class Catalog:
    relations: Mapping[str, Relation] = field(default_factory=dict)
    functions: Mapping[str, tuple[Function, ...]] = field(default_factory=dict)


_RELATIONS_SQL = """
SELECT c.relname AS name,
       array_agg(a.attname::text ORDER BY a.attnum) AS column_names,
       array_agg(format_type(a.atttypid, NULL) ORDER BY a.attnum) AS column_types,
       (SELECT array_agg(k.attname::text ORDER BY array_position(i.indkey::int2[], k.attnum))
          FROM pg_index i
          JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY (i.indkey::int2[])
         WHERE i.indrelid = c.oid AND i.indisprimary) AS primary_key
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
 GROUP BY c.oid, c.relname
"""

_FUNCTIONS_SQL = """
SELECT p.proname::text AS name,
       p.proretset AS returns_set,
       p.prorettype = 'void'::regtype AS returns_void,
       format_type(p.prorettype, NULL) AS return_type,
       t.typtype::text AS return_typtype,
       p.pronargs AS input_count,
       p.pronargdefaults AS default_count,
       coalesce(p.proargnames, '{}')::text[] AS arg_names,
       coalesce(p.proargmodes::text[], '{}') AS arg_modes,
       ARRAY(SELECT format_type(u.type_oid, NULL)
               FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY AS u(type_oid, i)
              ORDER BY u.i) AS arg_types,
       (SELECT array_agg(r.attname::text ORDER BY r.attnum) FROM pg_attribute r
         WHERE r.attrelid = t.typrelid AND r.attnum > 0 AND NOT r.attisdropped) AS row_names,
       (SELECT array_agg(format_type(r.atttypid, NULL) ORDER BY r.attnum) FROM pg_attribute r
         WHERE r.attrelid = t.typrelid AND r.attnum > 0 AND NOT r.attisdropped) AS row_types
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_type t ON t.oid = p.prorettype
 WHERE n.nspname = $1 AND p.prokind = 'f'
"""


def _function_from_row(row: asyncpg.Record) -> Function | None:
    names: list[str] = list(row["arg_names"])
    modes: list[str] = list(row["arg_modes"]) or ["i"] * row["input_count"]
    types: list[str] = list(row["arg_types"])
    names += [""] * (len(types) - len(names))
    inputs: list[tuple[str, str]] = []
    outputs: list[Column] = []
    for name, mode, type_ in zip(names, modes, types, strict=False):
        if mode in ("i", "b", "v"):
            inputs.append((name, type_))
        if mode in ("o", "b", "t"):
            outputs.append(Column(name, type_))
    if any(not name for name, _ in inputs):
        return None  # positional-only arguments cannot be called with named JSON arguments
    first_default = len(inputs) - row["default_count"]
    arguments = tuple(Argument(name, type_, index >= first_default) for index, (name, type_) in enumerate(inputs))
    if row["returns_void"]:
        kind, result = "void", None
    elif row["row_names"] is not None:
        kind = "composite"
        result = Relation(row["name"], {n: Column(n, t) for n, t in zip(row["row_names"], row["row_types"],
                                                                          strict=True)})
    elif row["return_type"] == "record" and len(outputs) > 1:
        kind = "composite"
        result = Relation(row["name"], {column.name: column for column in outputs})
    elif row["return_typtype"] == "p" and row["return_type"] not in ("json", "jsonb"):
        return None  # `RETURNS record` without OUT columns, `anyelement`, triggers: not callable over REST
    else:
        kind, result = "scalar", None
    return Function(row["name"], arguments, row["returns_set"], kind, row["return_type"], result)


async def load_catalog(conn: asyncpg.Connection, schema: str = SCHEMA) -> Catalog:
    """pg_catalog, not information_schema: the latter hides objects the gateway's login has no grant on."""
    relations = {}
    for row in await conn.fetch(_RELATIONS_SQL, schema):
        columns = {n: Column(n, t) for n, t in zip(row["column_names"], row["column_types"], strict=True)}
        relations[row["name"]] = Relation(row["name"], columns, tuple(row["primary_key"] or ()))
    functions: dict[str, list[Function]] = {}
    for row in await conn.fetch(_FUNCTIONS_SQL, schema):
        function = _function_from_row(row)
        if function is not None:
            functions.setdefault(function.name, []).append(function)
    return Catalog(relations, {name: tuple(overloads) for name, overloads in functions.items()})


class SchemaCache:
    """The current catalog; a miss reloads it (once for any number of concurrent misses) and looks again.

    Misses are rare and already failing requests, so paying a catalogue query for them is cheaper than serving a
    stale cache; `min_reload_interval` caps the reload rate when something probes unknown names in a loop.
    """

    def __init__(self, min_reload_interval: float = 0.0) -> None:
        self.catalog = Catalog()
        self._loaded_at = float("-inf")
        self._generation = 0
        self._min_reload_interval = min_reload_interval
        self._lock = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        self._reloads: set[asyncio.Task[Catalog]] = set()

    @property
    def loaded(self) -> bool:
        return self._generation > 0

    async def reload(self, pool: asyncpg.Pool) -> Catalog:
        async with self._lock:
            await self._load(pool)
            return self.catalog

    async def _load(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            self.catalog = await load_catalog(conn)
        self._loaded_at = time.monotonic()
        self._generation += 1

    async def listen(self, dsn: str, pool: asyncpg.Pool) -> None:
        """`NOTIFY pgrst, 'reload schema'` reloads the cache, as it does PostgREST's."""
        try:
            self._listener = await asyncpg.connect(dsn)
            await self._listener.add_listener("pgrst", lambda _c, _p, _ch, payload: self._notified(pool, payload))
        except (OSError, asyncpg.PostgresError) as exc:
            logger.warning("schema reload notifications are off: %s", exc)

    def _notified(self, pool: asyncpg.Pool, payload: str) -> None:
        if payload in ("", "reload schema"):
            task = asyncio.get_running_loop().create_task(self.reload(pool))
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()

    async def reload_if_stale(self, pool: asyncpg.Pool) -> bool:
        """Reload after a miss; True when the catalog is now newer than when the miss was seen."""
        seen = self._generation
        async with self._lock:
            if self._generation != seen:
                return True  # a concurrent miss reloaded while we waited
            if time.monotonic() - self._loaded_at < self._min_reload_interval:
                return False
            await self._load(pool)
            return True

    async def relation(self, pool: asyncpg.Pool, name: str) -> Relation:
        found = self.catalog.relations.get(name)
        if found is None and await self.reload_if_stale(pool):
            found = self.catalog.relations.get(name)
        if found is None:
            raise unknown_table(name)
        return found

    async def function(self, pool: asyncpg.Pool, name: str, argument_names: set[str]) -> Function:
        overloads = self.catalog.functions.get(name, ())
        matches = [f for f in overloads if f.accepts(argument_names)]
        if not matches and await self.reload_if_stale(pool):
            overloads = self.catalog.functions.get(name, ())
            matches = [f for f in overloads if f.accepts(argument_names)]
        if not matches:
            listed = ", ".join(sorted(argument_names))
            raise RestError(404, "PGRST202",
                            f"Could not find the function {SCHEMA}.{name}({listed}) in the schema cache",
                            hint="If a new function was created in the database with this name and parameters, "
                                 "try reloading the schema cache.")
        if len(matches) > 1:
            exact = [f for f in matches if {a.name for a in f.arguments} == argument_names]
            if len(exact) != 1:
                raise RestError(300, "PGRST203", f"Could not choose the best candidate function between: "
                                f"{', '.join(f'{SCHEMA}.{name}' for _ in matches)}")
            return exact[0]
        return matches[0]
