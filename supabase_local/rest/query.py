"""PostgREST's query-string language parsed into a typed model: select, filters, and/or trees, order, paging.

Parsing only checks shape (names match the identifier grammar, operators are known); `sql.py` checks names against
the schema cache and renders them quoted, with every value bound as a parameter.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from supabase_local.rest.errors import bad_query

# Unquoted names as PostgreSQL folds them, plus `$`; anything else must come double-quoted.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_JSON_KEY = re.compile(r"[A-Za-z0-9_$]+|-?\d+")
# Casts name one of these types only: the cast is written from this table, never from the request.
CAST_TYPES = {
    "text": "text", "varchar": "varchar", "char": "char", "bool": "boolean", "boolean": "boolean",
    "int": "integer", "int2": "smallint", "int4": "integer", "int8": "bigint", "integer": "integer",
    "smallint": "smallint", "bigint": "bigint", "numeric": "numeric", "decimal": "numeric", "real": "real",
    "float4": "real", "float8": "double precision", "float": "double precision", "uuid": "uuid", "json": "json",
    "jsonb": "jsonb", "date": "date", "time": "time", "timestamp": "timestamp", "timestamptz": "timestamptz",
    "interval": "interval",
}
COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE",
               "ilike": "ILIKE", "match": "~", "imatch": "~*", "cs": "@>", "cd": "<@", "ov": "&&",
               "isdistinct": "IS DISTINCT FROM"}
QUANTIFIED = {"like", "ilike"}  # like(any), ilike(all): a pattern list
FULL_TEXT = {"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery",
             "wfts": "websearch_to_tsquery"}
IS_VALUES = {"null": "NULL", "not_null": "NOT NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}

# Size limits no real client reaches: past them a query string is a 400 PGRST100 before any SQL is built.
# `or=(and(or(...)))` nested 900 deep overflowed Python's recursion (a 500 with a traceback in the log): a tree is at
# most 32 levels deep, `or=(...)` itself being level 1; a hand-written or generated filter stays within a few. At
# the limit an 80 KB tree parses in 0.15 s (one level of the same size: 0.03 s), and so does one refused deeper.
MAX_LOGIC_DEPTH = 32
# 5,000 select items hit PostgreSQL's 1,664-column limit (a 500): a select lists at most 1,000 items, each column
# named once being the most a client asks for. `sql.py` counts each `*` as the table's width against PostgreSQL's.
MAX_SELECT_ITEMS = 1000


@dataclass(frozen=True)
class JsonStep:
    key: str
    as_text: bool  # `->>` (text) rather than `->` (json)

    @property
    def is_index(self) -> bool:
        return self.key.lstrip("-").isdigit()


@dataclass(frozen=True)
class Field:
    """A column, optionally followed by a JSON path: `settings->'a'->>'b'` is Field('settings', (a, ->>b))."""

    column: str
    path: tuple[JsonStep, ...] = ()

    @property
    def output_name(self) -> str:
        # PostgREST names a JSON path result after its last key.
        return self.path[-1].key if self.path else self.column


@dataclass(frozen=True)
class SelectItem:
    field: Field | None  # None is `*`
    alias: str | None = None
    cast: str | None = None  # a value of CAST_TYPES


@dataclass(frozen=True)
class Condition:
    field: Field
    operator: str  # a key of COMPARISONS, or "is", "in", "fts"..., "like_any"...
    value: str | tuple[str, ...] | None
    negated: bool = False
    modifier: str | None = None  # `any`/`all` for like/ilike, the text search config for fts


@dataclass(frozen=True)
class Logic:
    conjunction: str  # "AND" or "OR"
    children: tuple[Condition | Logic, ...]
    negated: bool = False


@dataclass(frozen=True)
class OrderTerm:
    field: Field
    descending: bool = False
    nulls: str | None = None  # "FIRST", "LAST" or None for PostgreSQL's default


@dataclass
class Query:
    select: tuple[SelectItem, ...] = (SelectItem(None),)
    where: list[Condition | Logic] = field(default_factory=list)
    order: tuple[OrderTerm, ...] = ()
    limit: int | None = None
    offset: int | None = None
    on_conflict: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    # For rpc called with GET: parameters naming function arguments, decided by the caller.
    arguments: dict[str, str] = field(default_factory=dict)


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on `separator` outside parentheses and double quotes (backslash escapes inside quotes)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                raise bad_query(f'"failed to parse": unbalanced parentheses in "{text}"')
        elif not quoted and depth == 0 and char == separator:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted or depth:
        raise bad_query(f'"failed to parse": unterminated quote or parenthesis in "{text}"')
    parts.append("".join(current))
    return parts


def unquote(text: str) -> str:
    """`"a\\"b"` becomes `a"b`; text without surrounding quotes is returned as is."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.DOTALL)
    return text


def parse_name(text: str, what: str = "column") -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        name = unquote(text)
        if name and "\x00" not in name:
            return name
    elif _NAME.fullmatch(text):
        return text
    raise bad_query(f"invalid {what} name: {text!r}")


def parse_field(text: str) -> Field:
    """`col`, `"quoted col"`, `col->key`, `col->>key`, `col->0->>key`."""
    text = text.strip()
    arrow = text.find("->")
    if arrow == -1:
        return Field(parse_name(text))
    column = parse_name(text[:arrow])
    tokens = re.split(r"(->>|->)", text[arrow:])
    # tokens alternate: "", arrow, key, arrow, key ...
    if tokens[0] != "" or len(tokens) % 2 == 0:
        raise bad_query(f"invalid JSON path {text!r}")
    steps = []
    for arrow_text, key in zip(tokens[1::2], tokens[2::2], strict=True):
        if not _JSON_KEY.fullmatch(key):
            raise bad_query(f"invalid JSON path key {key!r} in {text!r}")
        steps.append(JsonStep(key, arrow_text == "->>"))
    return Field(column, tuple(steps))


def parse_select(text: str) -> tuple[SelectItem, ...]:
    items = []
    raws = split_top_level(text)
    if len(raws) > MAX_SELECT_ITEMS:
        raise bad_query(f'"failed to parse select": more than {MAX_SELECT_ITEMS} items',
                        f"A select lists at most {MAX_SELECT_ITEMS} columns.")
    for raw in raws:
        raw = raw.strip()
        if not raw:
            continue
        if "(" in raw or raw.startswith("...") or "!" in raw:
            raise bad_query(f"embedded resources and aggregates are not supported by this gateway: {raw!r}",
                            "Select columns of this table only, and query related tables separately.")
        cast = None
        if "::" in raw:
            raw, _, cast_name = raw.rpartition("::")
            cast = CAST_TYPES.get(cast_name.strip().lower())
            if cast is None:
                raise bad_query(f"unsupported cast type {cast_name!r}")
        alias = None
        if ":" in raw and not raw.startswith('"'):
            alias_text, _, raw = raw.partition(":")
            alias = parse_name(alias_text, "alias")
        if raw == "*":
            if alias or cast:
                raise bad_query("`*` cannot be aliased or cast")
            items.append(SelectItem(None))
        else:
            items.append(SelectItem(parse_field(raw), alias, cast))
    return tuple(items) or (SelectItem(None),)


def parse_list(text: str) -> tuple[str, ...]:
    """`(a,b,"c,d")` as PostgREST reads an `in` list."""
    if not (text.startswith("(") and text.endswith(")")):
        raise bad_query(f'"failed to parse filter": expected a list like (a,b), got {text!r}')
    inner = text[1:-1]
    if not inner:
        return ()
    # No trimming: whitespace is part of a value, as supabase-py sends it unquoted.
    return tuple(unquote(part) for part in split_top_level(inner))


_OPERATOR = re.compile(r"(not\.)?([a-z]+)(?:\(([A-Za-z_][A-Za-z0-9_]*)\))?\.(.*)", re.DOTALL)


def parse_condition(field_text: str, expression: str, in_logic_tree: bool = False) -> Condition:
    """`eq.5`, `not.in.(1,2)`, `is.null`, `like(any).{a*,b*}`, `fts(english).cat`."""
    match = _OPERATOR.fullmatch(expression)
    if match is None:
        raise bad_query(f'"failed to parse filter ({expression})"')
    negated, operator, modifier, value = bool(match.group(1)), match.group(2), match.group(3), match.group(4)
    target = parse_field(field_text)
    if in_logic_tree and operator != "in":
        value = unquote(value)  # inside or=(...) quotes protect commas and parentheses
    if operator == "is":
        if value.lower() not in IS_VALUES or modifier:
            raise bad_query(f'"failed to parse filter (is.{value})"',
                            "is accepts null, not_null, true, false or unknown")
        return Condition(target, "is", value.lower(), negated)
    if operator == "in":
        if modifier:
            raise bad_query(f'"failed to parse filter ({expression})"')
        return Condition(target, "in", parse_list(value), negated)
    if operator in FULL_TEXT:
        return Condition(target, operator, value, negated, modifier)
    if operator in QUANTIFIED and modifier in ("any", "all"):
        if not (value.startswith("{") and value.endswith("}")):
            raise bad_query(f'"failed to parse filter ({expression})"', "expected a list like {a,b}")
        return Condition(target, operator, value, negated, modifier)
    if operator not in COMPARISONS or modifier:
        raise bad_query(f'"failed to parse filter ({expression})"', f"unknown operator {operator!r}")
    return Condition(target, operator, value, negated)


def parse_logic(key: str, value: str, depth: int = 1) -> Logic:
    """`or=(a.eq.1,and(b.gt.2,c.is.null))`; the key is `or`, `and`, `not.or` or `not.and`; `depth` is this tree's
    level, refused past MAX_LOGIC_DEPTH before its children are looked at."""
    negated = key.startswith("not.")
    conjunction = key.removeprefix("not.").upper()
    if depth > MAX_LOGIC_DEPTH:
        # Not the value in the message: it is as long as the tree it failed in.
        raise bad_query(f'"failed to parse logic tree": nested deeper than {MAX_LOGIC_DEPTH} levels',
                        f"and/or may nest at most {MAX_LOGIC_DEPTH} levels deep.")
    if not (value.startswith("(") and value.endswith(")")):
        raise bad_query(f'"failed to parse logic tree ({value})"')
    children: list[Condition | Logic] = []
    for part in split_top_level(value[1:-1]):
        part = part.lstrip()  # space after a comma separates; trailing space belongs to the value
        nested = re.fullmatch(r"(not\.)?(and|or)(\(.*\))", part, re.DOTALL)
        if nested:
            children.append(parse_logic((nested.group(1) or "") + nested.group(2), nested.group(3), depth + 1))
            continue
        field_text, dot, expression = part.partition(".")
        if not dot:
            raise bad_query(f'"failed to parse logic tree ({value})"')
        children.append(parse_condition(field_text, expression, in_logic_tree=True))
    if not children:
        raise bad_query(f'"failed to parse logic tree ({value})"')
    return Logic(conjunction, tuple(children), negated)


def parse_order(text: str) -> tuple[OrderTerm, ...]:
    terms = []
    for raw in split_top_level(text):
        raw = raw.strip()
        if not raw:
            continue
        pieces = raw.split(".")
        # The modifiers are the trailing pieces that are modifiers; a quoted name may itself contain dots.
        modifiers: list[str] = []
        while len(pieces) > 1 and pieces[-1] in ("asc", "desc", "nullsfirst", "nullslast"):
            modifiers.insert(0, pieces.pop())
        direction = [m for m in modifiers if m in ("asc", "desc")]
        nulls = [m for m in modifiers if m.startswith("nulls")]
        if len(direction) > 1 or len(nulls) > 1 or (modifiers and modifiers != direction + nulls):
            raise bad_query(f'"failed to parse order ({raw})"')
        terms.append(OrderTerm(
            parse_field(".".join(pieces)),
            descending=direction == ["desc"],
            nulls={"nullsfirst": "FIRST", "nullslast": "LAST"}[nulls[0]] if nulls else None,
        ))
    return tuple(terms)


def parse_count(text: str, what: str) -> int:
    if not text.isdigit():
        raise bad_query(f'"failed to parse {what} ({text})"', f"{what} must be a non-negative integer")
    return int(text)


# A client sends the same few selects over and over (supabase-py's `.select("id, name")` per call site): parsed once.
# Only short ones are kept, so the memory is bounded; the parse is pure and its result immutable.
_SELECTS_KEPT = 512
_SELECT_KEPT_LENGTH = 2000


@functools.lru_cache(maxsize=_SELECTS_KEPT)
def _cached_select(text: str) -> tuple[SelectItem, ...]:
    return parse_select(text)


def parsed_select(text: str) -> tuple[SelectItem, ...]:
    """`parse_select`, remembered for short selects (a refused one raises each time: errors are not cached)."""
    return _cached_select(text) if len(text) <= _SELECT_KEPT_LENGTH else parse_select(text)


def parse_name_list(text: str) -> tuple[str, ...]:
    return tuple(parse_name(part) for part in split_top_level(text) if part.strip())


def parse_query(params: Iterable[tuple[str, str]], argument_names: Sequence[str] = ()) -> Query:
    """Every query parameter is one of: a reserved word, an rpc argument (GET /rpc), or a filter `col=op.value`."""
    query = Query()
    arguments = set(argument_names)
    for key, value in params:
        if key == "apikey":
            continue  # Supabase's gateway accepts the key in the URL too; it is not a filter
        if key == "select":
            query.select = parsed_select(value)
        elif key == "order":
            query.order += parse_order(value)
        elif key == "limit":
            query.limit = parse_count(value, "limit")
        elif key == "offset":
            query.offset = parse_count(value, "offset")
        elif key == "on_conflict":
            query.on_conflict = parse_name_list(value)
        elif key == "columns":
            query.columns = parse_name_list(value)
        elif key in ("or", "and", "not.or", "not.and"):
            query.where.append(parse_logic(key, value))
        elif key in arguments:
            query.arguments[key] = value
        else:
            if "." in key and not key.startswith('"') and "->" not in key:
                # `table.filter` targets an embedded resource, which this gateway does not serve.
                raise bad_query(f"filters on embedded resources are not supported: {key!r}")
            field_text, expression = key, value
            query.where.append(parse_condition(field_text, expression))
    return query
