"""The SQL the gateway keeps per table between requests (sql.py: a table's Source and its select lists) answers as
a fresh build would: a reloaded table is built anew, and a select list that binds parameters is never kept."""

from __future__ import annotations

import pytest

from supabase_local.rest.catalog import Column, Relation
from supabase_local.rest.errors import RestError
from supabase_local.rest.query import parse_query, parsed_select
from supabase_local.rest.sql import Parameters, Returning, Source, read_statement, select_sql, update_statement


def _clients(*columns: str) -> Relation:
    return Relation("clients", {name: Column(name, "text") for name in columns}, ("id",))


def test_a_reloaded_table_is_built_from_its_new_columns() -> None:
    items = parsed_select("id,name")
    before = _clients("id", "name")
    assert select_sql(Source.table(before), items, Parameters()) == (
        '"clients"."id" AS "id", "clients"."name" AS "name"')
    after = _clients("id")  # the column was dropped, and the schema cache reloaded
    assert Source.table(after).relation is after
    with pytest.raises(RestError) as refused:
        select_sql(Source.table(after), items, Parameters())
    assert refused.value.code == "42703"


def test_a_select_list_with_a_json_path_binds_its_keys_in_each_statement() -> None:
    relation = Relation("clients", {"id": Column("id", "uuid"), "settings": Column("settings", "jsonb")}, ("id",))
    items = parsed_select("id,settings->>theme")
    for _ in range(2):
        # In an UPDATE … RETURNING the body is $1, so the path's key is $2: numbered per statement, never kept.
        update = update_statement(relation, '{"id": "x"}', ["id"], parse_query([]), Returning(items))
        assert update.args[-1] == "theme" and '->>$2' in update.sql, update.sql
    params = Parameters()
    params.add("first")
    assert select_sql(Source.table(relation), items, params).count("$2") == 1
    assert params.values == ["first", "theme"]


def test_the_same_select_on_the_same_table_is_the_same_sql_as_a_fresh_build() -> None:
    relation = _clients("id", "name", "phone")
    query = parse_query([("select", "id,name,phone"), ("id", "eq.1")])
    first = read_statement(Source.table(relation), query, count=False, strip_nulls=False, limit=1000)
    again = read_statement(Source.table(relation), query, count=False, strip_nulls=False, limit=1000)
    fresh = read_statement(Source(relation, '"public"."clients"', '"clients"'),
                           parse_query([("select", "id, name ,phone"), ("id", "eq.1")]), count=False,
                           strip_nulls=False, limit=1000)
    assert first == again == fresh
