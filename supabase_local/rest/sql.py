"""Parameterised SQL for each PostgREST operation: read, insert/upsert, update, delete and rpc.

Identifiers come from the schema cache and are quoted; types come from the catalogue or a fixed table; every value
from the request is a bound parameter. JSON is produced by PostgreSQL (`json_agg`), so rows never become Python.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from supabase_local.rest.catalog import SCHEMA, Function, Relation
from supabase_local.rest.errors import bad_body, bad_query, unknown_body_column, unknown_column
from supabase_local.rest.query import (
    COMPARISONS,
    FULL_TEXT,
    IS_VALUES,
    Condition,
    Field,
    Logic,
    OrderTerm,
    Query,
    SelectItem,
)

ROW = "_pgrst_row"  # alias of the page of rows being turned into JSON
BODY = "_pgrst_body"  # alias of the request body as a row of the target table
ARGS = "_pgrst_args"  # alias of the rpc arguments as a typed row
# PostgreSQL's MaxTupleAttributeNumber: a longer target list fails with 54011, which is a 500 like any server limit.
POSTGRES_MAX_COLUMNS = 1664


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(name: str) -> str:
    return f"{quote_ident(SCHEMA)}.{quote_ident(name)}"


@dataclass(frozen=True)
class Statement:
    sql: str
    args: tuple[object, ...]
    # A bare INSERT/UPDATE/DELETE: executed for its command status ("UPDATE 3"), which carries the row count.
    command: bool = False


class Parameters:
    """Collects bound values; `add` returns the placeholder with the declared parameter type."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object, type_: str = "text") -> str:
        self.values.append(value)
        return f"${len(self.values)}::{type_}"


@dataclass(frozen=True)
class Source:
    """What a query reads from: its columns, the SQL in FROM, and the name columns are qualified with."""

    relation: Relation
    from_sql: str
    qualifier: str

    @classmethod
    def table(cls, relation: Relation) -> Source:
        kept = _TABLE_SOURCES.get(id(relation))
        if kept is not None and kept.relation is relation:
            return kept
        source = cls(relation, qualified(relation.name), quote_ident(relation.name))
        _keep(_TABLE_SOURCES, id(relation), source)
        return source


# What a table's requests repeat, kept per Relation object (a schema reload makes new ones; the identity check
# keeps a reused id from answering for another): its Source and the SQL of each select list without JSON paths
# (those bind their keys as parameters, numbered per statement). With both, read_statement for supabase-py's select
# by primary key went from 5.0 to 2.6 µs (min of 5 × 100,000). At most MEMO_SIZE of each; then they start over.
MEMO_SIZE = 512
_TABLE_SOURCES: dict[int, Source] = {}
_SELECT_LISTS: dict[tuple[int, int, str], tuple[Relation, tuple[SelectItem, ...], str]] = {}


def _keep(memo: dict[Any, Any], key: object, value: object) -> None:
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value


# -- expressions --------------------------------------------------------------------------------------------------

def field_sql(source: Source, field: Field, params: Parameters) -> tuple[str, str]:
    """The expression for a column or JSON path, and the type a compared value must be cast to."""
    column = source.relation.column(field.column)
    if column is None:
        raise unknown_column(source.relation.name, field.column)
    sql = f"{source.qualifier}.{quote_ident(column.name)}"
    if not field.path:
        return sql, column.type
    json_type = "json" if column.type == "json" else "jsonb"
    for step in field.path:
        key = params.add(int(step.key), "integer") if step.is_index else params.add(step.key)
        sql = f"{sql}{'->>' if step.as_text else '->'}{key}"
    return f"({sql})", "text" if field.path[-1].as_text else json_type


def typed_value(value: str, type_: str, params: Parameters) -> str:
    # Bound as text and cast explicitly, as an untyped literal would be: PostgreSQL parses it by the column's type.
    placeholder = params.add(value)
    return placeholder if type_ == "text" else f"{placeholder}::{type_}"


def condition_sql(source: Source, condition: Condition, params: Parameters) -> str:
    target, type_ = field_sql(source, condition.field, params)
    operator, value = condition.operator, condition.value
    if operator == "is":
        assert isinstance(value, str)
        expression = f"{target} IS {IS_VALUES[value]}"
    elif operator == "in":
        assert isinstance(value, tuple)
        expression = f"{target} = ANY({params.add(list(value), 'text[]')}::{type_}[])"
    elif operator in FULL_TEXT:
        assert isinstance(value, str)
        config = f"{params.add(condition.modifier)}::regconfig, " if condition.modifier else ""
        if type_ != "tsvector":
            # Text and JSON columns are turned into a document with the same configuration, as PostgREST does.
            target = f"to_tsvector({config}{target})"
        expression = f"{target} @@ {FULL_TEXT[operator]}({config}{params.add(value)})"
    elif operator in ("like", "ilike") and condition.modifier:
        assert isinstance(value, str)
        pattern = params.add(value.replace("*", "%"))
        expression = f"{target} {operator.upper()} {condition.modifier.upper()}({pattern}::text[])"
    elif operator in ("like", "ilike", "match", "imatch"):
        assert isinstance(value, str)
        # PostgREST lets `*` stand for `%` so patterns need no URL escaping.
        pattern = value.replace("*", "%") if operator in ("like", "ilike") else value
        expression = f"{target} {COMPARISONS[operator]} {params.add(pattern)}"
    else:
        assert isinstance(value, str)
        expression = f"{target} {COMPARISONS[operator]} {typed_value(value, type_, params)}"
    return f"NOT ({expression})" if condition.negated else expression


def where_sql(source: Source, where: Sequence[Condition | Logic], params: Parameters) -> str:
    if not where:
        return ""
    return " WHERE " + " AND ".join(_predicate(source, node, params) for node in where)


def _predicate(source: Source, node: Condition | Logic, params: Parameters) -> str:
    if isinstance(node, Condition):
        return condition_sql(source, node, params)
    joined = f" {node.conjunction} ".join(_predicate(source, child, params) for child in node.children)
    return f"NOT ({joined})" if node.negated else f"({joined})"


def order_sql(source: Source, order: Sequence[OrderTerm], params: Parameters) -> str:
    if not order:
        return ""
    terms = []
    for term in order:
        target, _ = field_sql(source, term.field, params)
        nulls = f" NULLS {term.nulls}" if term.nulls else ""
        terms.append(f"{target} {'DESC' if term.descending else 'ASC'}{nulls}")
    return " ORDER BY " + ", ".join(terms)


def select_sql(source: Source, items: Sequence[SelectItem], params: Parameters) -> str:
    """The select list's SQL; kept for a tuple of items (the parser hands out the same tuple for the same text)
    that bound no parameter."""
    key = (id(source.relation), id(items), source.qualifier)
    kept = _SELECT_LISTS.get(key)
    if kept is not None and kept[0] is source.relation and kept[1] is items:
        return kept[2]
    bound = len(params.values)
    sql = _select_sql(source, items, params)
    if isinstance(items, tuple) and len(params.values) == bound:
        _keep(_SELECT_LISTS, key, (source.relation, items, sql))
    return sql


def _select_sql(source: Source, items: Sequence[SelectItem], params: Parameters) -> str:
    # The parser caps the items; only here is a `*` known to be every column of the table.
    width = sum(len(source.relation.columns) if item.field is None else 1 for item in items)
    if width > POSTGRES_MAX_COLUMNS:
        raise bad_query(f'"failed to parse select": it names {width} columns (a * is every column of '
                        f'{source.relation.name}), more than the {POSTGRES_MAX_COLUMNS} PostgreSQL returns in a row')
    parts = []
    for item in items:
        if item.field is None:
            parts.append(f"{source.qualifier}.*")
            continue
        target, _ = field_sql(source, item.field, params)
        if item.cast:
            target = f"CAST({target} AS {item.cast})"
        parts.append(f"{target} AS {quote_ident(item.alias or item.field.output_name)}")
    return ", ".join(parts)


def page_sql(limit: int | None, offset: int | None, params: Parameters) -> str:
    sql = ""
    if limit is not None:
        sql += f" LIMIT {params.add(limit, 'bigint')}"
    if offset:
        sql += f" OFFSET {params.add(offset, 'bigint')}"
    return sql


def json_body_sql(strip_nulls: bool) -> str:
    body = f"coalesce(json_agg({ROW}), '[]')"
    return f"json_strip_nulls({body})::text" if strip_nulls else f"{body}::text"


# -- reads --------------------------------------------------------------------------------------------------------

def read_statement(source: Source, query: Query, *, count: bool, strip_nulls: bool,
                   limit: int | None, with_sql: str = "", params: Parameters | None = None) -> Statement:
    """One row back: `body` (the JSON array), `page_rows`, and `total` (the filtered count, when asked)."""
    params = params or Parameters()
    items = select_sql(source, query.select, params)
    where = where_sql(source, query.where, params)
    order = order_sql(source, query.order, params)
    page = page_sql(limit, query.offset, params)
    total = f", (SELECT count(*) FROM {source.from_sql}{where}) AS total" if count else ", NULL::bigint AS total"
    sql = (f"{with_sql}SELECT {json_body_sql(strip_nulls)} AS body, count(*) AS page_rows{total} "
           f"FROM (SELECT {items} FROM {source.from_sql}{where}{order}{page}) AS {ROW}")
    return Statement(sql, tuple(params.values))


# -- writes -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Returning:
    """`items` for return=representation; None returns nothing (the row count comes from the command status)."""

    items: tuple[SelectItem, ...] | None
    strip_nulls: bool = False


def _finish_write(source: Source, command: str, returning: Returning, params: Parameters) -> Statement:
    if returning.items is None:
        return Statement(command, tuple(params.values), command=True)
    items = select_sql(source, returning.items, params)
    sql = (f"WITH {ROW}_source AS ({command} RETURNING {items}) "
           f"SELECT {json_body_sql(returning.strip_nulls)} AS body, count(*) AS page_rows, NULL::bigint AS total "
           f"FROM {ROW}_source AS {ROW}")
    return Statement(sql, tuple(params.values))


def body_columns(relation: Relation, names: Sequence[str]) -> list[str]:
    for name in names:
        if relation.column(name) is None:
            raise unknown_body_column(relation.name, name)
    return list(names)


def insert_statement(relation: Relation, body_json: str, is_array: bool, columns: Sequence[str], *,
                     on_conflict: Sequence[str] | None, resolution: str | None,
                     returning: Returning) -> Statement:
    """INSERT ... SELECT from the body as rows of the table's type: PostgreSQL converts every JSON value."""
    source = Source.table(relation)
    params = Parameters()
    names = body_columns(relation, columns)
    if names:
        listed = ", ".join(quote_ident(name) for name in names)
        populate = "json_populate_recordset" if is_array else "json_populate_record"
        rows = f"{populate}(NULL::{source.from_sql}, {params.add(body_json, 'json')})"
        command = f"INSERT INTO {source.from_sql} ({listed}) SELECT {listed} FROM {rows} AS {BODY}"
    elif not is_array:
        command = f"INSERT INTO {source.from_sql} DEFAULT VALUES"
    else:
        raise bad_body("cannot insert rows without columns in bulk; send at least one key")
    if resolution is not None:
        target = list(on_conflict) if on_conflict else list(relation.primary_key)
        for name in target:
            if relation.column(name) is None:
                raise unknown_column(relation.name, name)
        conflict = f" ON CONFLICT ({', '.join(quote_ident(n) for n in target)})" if target else " ON CONFLICT"
        if resolution == "ignore-duplicates" or not names:
            command += f"{conflict} DO NOTHING"
        else:
            if not target:
                raise bad_query("merge-duplicates needs on_conflict or a primary key on the table")
            updates = ", ".join(f"{quote_ident(n)} = EXCLUDED.{quote_ident(n)}" for n in names)
            command += f"{conflict} DO UPDATE SET {updates}"
    return _finish_write(source, command, returning, params)


def update_statement(relation: Relation, body_json: str, columns: Sequence[str], query: Query,
                     returning: Returning) -> Statement:
    source = Source.table(relation)
    params = Parameters()
    names = body_columns(relation, columns)
    body = params.add(body_json, "json")
    assignments = ", ".join(f"{quote_ident(n)} = {BODY}.{quote_ident(n)}" for n in names)
    command = (f"UPDATE {source.from_sql} SET {assignments} "
               f"FROM (SELECT * FROM json_populate_record(NULL::{source.from_sql}, {body})) AS {BODY}"
               f"{where_sql(source, query.where, params)}")
    return _finish_write(source, command, returning, params)


def delete_statement(relation: Relation, query: Query, returning: Returning) -> Statement:
    source = Source.table(relation)
    params = Parameters()
    command = f"DELETE FROM {source.from_sql}{where_sql(source, query.where, params)}"
    return _finish_write(source, command, returning, params)


# -- rpc ----------------------------------------------------------------------------------------------------------

def rpc_call_sql(function: Function, argument_names: Sequence[str], arguments_json: str,
                 params: Parameters) -> tuple[str, str]:
    """(FROM items that type the JSON arguments, the call): `json_to_record` casts each to its declared type."""
    by_name = {argument.name: argument for argument in function.arguments}
    if not argument_names:
        return "", f"{qualified(function.name)}()"
    columns = ", ".join(f"{quote_ident(n)} {by_name[n].type}" for n in argument_names)
    args_from = f"json_to_record({params.add(arguments_json, 'json')}) AS {ARGS}({columns})"
    call_args = ", ".join(f"{quote_ident(n)} => {ARGS}.{quote_ident(n)}" for n in argument_names)
    return args_from, f"{qualified(function.name)}({call_args})"


def rpc_statement(function: Function, arguments: dict[str, object], query: Query, *, count: bool,
                  strip_nulls: bool, limit: int | None) -> Statement:
    """Columns: `body` (JSON text or NULL for void), `page_rows`, `total`, shaped as PostgREST answers."""
    params = Parameters()
    names = list(arguments)
    args_from, call = rpc_call_sql(function, names, json.dumps(arguments), params)
    from_args = f" FROM {args_from}" if args_from else ""
    if function.return_kind == "composite":
        assert function.result is not None
        name = quote_ident(function.name)
        lateral = f"{args_from} CROSS JOIN LATERAL " if args_from else ""
        # Materialised once, so filters, the page and the count never call a volatile function twice.
        with_sql = f"WITH {name} AS MATERIALIZED (SELECT _pgrst_call.* FROM {lateral}{call} AS _pgrst_call) "
        source = Source(function.result, name, name)
        return read_statement(source, query, count=count, strip_nulls=strip_nulls, limit=limit,
                              with_sql=with_sql, params=params)
    if query.where or query.order or any(item.field is not None for item in query.select):
        raise bad_query(f"filters, order and select apply to functions returning rows; "
                        f"{function.name} returns {function.return_type}")
    if function.return_kind == "void":
        # The call's void result is cast to text (always ''), so the row decodes without a codec for void.
        return Statement(f"SELECT NULL::text AS body, 1::bigint AS page_rows, NULL::bigint AS total, "
                         f"({call})::text AS void{from_args}", tuple(params.values))
    if not function.returns_set:
        return Statement(f"SELECT to_json({call})::text AS body, 1::bigint AS page_rows, NULL::bigint AS total"
                         f"{from_args}", tuple(params.values))
    lateral = f"{args_from} CROSS JOIN LATERAL " if args_from else ""
    page = page_sql(limit, query.offset, params)
    total = f", (SELECT count(*) FROM {lateral}{call})" if count else ", NULL::bigint"
    sql = (f"SELECT coalesce(json_agg({ROW}.v), '[]')::text AS body, count(*) AS page_rows{total} AS total "
           f"FROM (SELECT _pgrst_value AS v FROM {lateral}{call} AS _pgrst_value{page}) AS {ROW}")
    return Statement(sql, tuple(params.values))
