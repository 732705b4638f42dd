"""To-one relations joined into a level's own statement (planned reads).

A level's statement (a page of objectives, their descendants, key results, a key result
by id) can carry the rows it points at (cycle, owner, team, last check-in) as extra
columns named `<join>__<column>`; `absorb` turns them back into rows kept by id, so the
relation costs no statement of its own. Which joins a statement carries is decided from
what the document selects (schema/plan/), never from the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service import models


class Row(dict[str, Any]):
    """A row rebuilt from joined columns: item access, and attribute access as `Rec`."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


COLUMNS: dict[str, tuple[str, ...]] = {
    t: tuple(c.name for c in models.metadata.tables[t].columns)
    for t in ("objective", "key_result", "check_in", "app_user", "team", "cycle")
}

# join name -> (table, the level's foreign key column)
JOINS: dict[str, tuple[str, str]] = {
    "cycle": ("cycle", "cycle_id"),
    "owner": ("app_user", "owner_id"),
    "team": ("team", "team_id"),
    "last": ("check_in", "last_check_in_id"),
}


def select_list(joins: Iterable[str]) -> str:
    """`, j.col AS j__col, ...` for each join (empty when none)."""
    parts: list[str] = []
    for j in joins:
        table, _fk = JOINS[j]
        parts.extend(f"{j}_j.{c} AS {j}__{c}" for c in COLUMNS[table])
    return "".join(", " + p for p in parts)


def from_list(base: str, joins: Iterable[str], skip: dict[str, int] | None = None) -> str:
    """` LEFT JOIN table j_j ON j_j.id = base.fk` for each join; with `skip`, a join's
    rows whose ids are in that parameter (an int8[] of rows already known) come as NULLs,
    which cost nothing to decode."""
    out = []
    for j in joins:
        table, fk = JOINS[j]
        cond = f"{j}_j.id = {base}.{fk}"
        if skip and j in skip:
            cond += f" AND {j}_j.id <> ALL(${skip[j]}::int8[])"
        out.append(f" LEFT JOIN {table} {j}_j ON {cond}")
    return "".join(out)


def absorb(known: dict[str, dict[int, Any]], rows: Iterable[Any], joins: Iterable[str]) -> None:
    """Keep the joined rows by id (a row already known stays as it is)."""
    rows = list(rows)
    for j in joins:
        table, _fk = JOINS[j]
        names = [(c, f"{j}__{c}") for c in COLUMNS[table]]
        key = f"{j}__id"
        have = known[table]
        for r in rows:
            k = r[key]
            if k is not None and k not in have:
                have[k] = Row({c: r[p] for c, p in names})


def absorb_prefixed(
    known: dict[int, Any], rows: Iterable[Any], table: str, prefix: str
) -> list[Row]:
    """Rows of `table` carried as `<prefix>__<column>` (a lateral page): in order, each
    also kept by id."""
    names = [(c, f"{prefix}__{c}") for c in COLUMNS[table]]
    key = f"{prefix}__id"
    out = []
    for r in rows:
        if r[key] is None:
            continue
        row = Row({c: r[p] for c, p in names})
        known.setdefault(row["id"], row)
        out.append(row)
    return out
