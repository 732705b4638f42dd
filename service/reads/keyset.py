"""Keyset pages both ways: Relay's `first`/`after` and `last`/`before` as statements.

A page is `size` rows after a cursor (forward) or before it (backward), in the list's
own order, plus one row more to tell whether another page follows in that direction.
With a cursor, the same statement also asks whether any row lies on the cursor's other
side (at most one row, marked `beyond_cursor`): so `hasPreviousPage` and `hasNextPage`
are both true to the data, in one statement, without OFFSET. Positions are the values
of the ordering columns (the last one unique), so rows inserted elsewhere between two
pages shift nothing: the next page starts after the last row seen, wherever it now is.

The ordering comparisons run in the database (a name orders by its collation there,
never by Python's), and rows come back in the order they were fetched: `split` turns
them into the page in the list's order with its two flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    cast,
    false,
    func,
    literal,
    literal_column,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import distinct_on

BEYOND = "beyond_cursor"


@dataclass(frozen=True)
class Slice:
    """A page asked for: `size` rows after `cursor` (forward), or before it (backward);
    `cursor` holds the ordering columns' values, None for an end of the list."""

    size: int
    cursor: tuple[Any, ...] | None = None
    backward: bool = False


def _side(
    columns: Sequence[Any], cursor: tuple[Any, ...], descending: bool, ahead: bool, strict: bool
) -> ColumnElement[bool]:
    """Rows ahead of the cursor (toward the list's end) or behind it; `strict`: not the
    cursor's own row."""
    if len(columns) == 1:
        key: Any = columns[0]
        value: Any = cursor[0]
    else:
        key = tuple_(*columns)
        value = tuple_(*(literal(v, c.type) for v, c in zip(cursor, columns, strict=True)))
    greater = ahead != descending
    if greater:
        return key > value if strict else key >= value
    return key < value if strict else key <= value


def _order(columns: Sequence[Any], descending: bool, s: Slice) -> list[Any]:
    down = descending != s.backward
    return [c.desc() if down else c.asc() for c in columns]


def page(base: Select, columns: Sequence[Any], descending: bool, s: Slice) -> Select:
    """One page of `base` ordered by `columns` (ascending unless `descending`), in the
    order fetched (backward: from the cursor toward the list's start)."""
    rows = base.add_columns(false().label(BEYOND))
    if s.cursor is not None:
        rows = rows.where(_side(columns, s.cursor, descending, not s.backward, True))
    rows = rows.order_by(*_order(columns, descending, s)).limit(s.size + 1)
    if s.cursor is None:
        return rows
    probe = (
        base.add_columns(true().label(BEYOND))
        .where(_side(columns, s.cursor, descending, s.backward, False))
        .limit(1)
    )
    both = union_all(rows, probe).subquery()
    down = descending != s.backward
    return select(both).order_by(
        both.c[BEYOND], *[both.c[c.name].desc() if down else both.c[c.name].asc() for c in columns]
    )


def pages(base: Select, parent: Any, columns: Sequence[Any], descending: bool, s: Slice) -> Select:
    """The same page for each parent (`base` selects the rows of all of them), grouped
    by `parent` and in the order fetched within each group."""
    rn = func.row_number().over(partition_by=parent, order_by=_order(columns, descending, s))
    inner = base.add_columns(rn.label("_rn"), false().label(BEYOND))
    if s.cursor is not None:
        inner = inner.where(_side(columns, s.cursor, descending, not s.backward, True))
    sub = inner.subquery()
    rows = select(sub).where(sub.c._rn <= s.size + 1)
    if s.cursor is None:
        return rows.order_by(sub.c[parent.name], sub.c._rn)
    probe = (
        base.add_columns(cast(literal_column("0"), BigInteger).label("_rn"), true().label(BEYOND))
        .where(_side(columns, s.cursor, descending, s.backward, False))
        .ext(distinct_on(parent))
    )
    both = union_all(rows, probe).subquery()
    return select(both).order_by(both.c[parent.name], both.c[BEYOND], both.c._rn)


def split(rows: Sequence[Any], s: Slice) -> tuple[list[Any], bool, bool]:
    """(the page's rows in the list's order, hasPreviousPage, hasNextPage) from the rows
    a statement above fetched (of one parent)."""
    found = [r for r in rows if not getattr(r, BEYOND, False)]
    beyond = len(found) < len(rows)
    more = len(found) > s.size
    found = found[: s.size]
    if s.backward:
        found.reverse()
        return found, more, beyond
    return found, beyond, more
