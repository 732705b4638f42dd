"""A plan file (README, "Plans as files"): YAML or JSON text read into typed values.

`parse` collects every problem it finds, each with its path in the plan
(`objectives/reduce-costs/keyResults/cost-per-order/targetValue`), instead of stopping
at the first: the JSON Schema shipped for editors (service/plan.schema.json, `okr plan
schema`), then what a schema cannot say (a key used twice, a loop between parents, a
start and target that make no key result, dates out of order). Names of teams, people
and metrics are checked against the organization by service/usecases/plans.py.

An item's field left out of the file is kept as it is (and takes the create input's
default for a new item); a field given, null included, is what the item must be."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from service.domain import rules
from service.domain.enums import KeyResultType

VERSION = 1
MAX_DOCUMENT = 5_000_000  # characters


@dataclass(frozen=True)
class Problem:
    path: str  # "" for the document itself
    message: str
    code: str = "INVALID"  # an ErrorCode's value


@dataclass(frozen=True)
class PlanCycle:
    name: str
    starts_on: date
    ends_on: date


@dataclass(frozen=True)
class PlanKeyResult:
    key: str
    path: str
    fields: dict[str, Any]  # the fields the file gives, by their plan names ("key" too)


@dataclass(frozen=True)
class PlanObjective:
    key: str
    path: str
    fields: dict[str, Any]  # as above, "keyResults" left out
    key_results: list[PlanKeyResult] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    cycle: PlanCycle
    objectives: list[PlanObjective]


@cache
def schema() -> dict[str, Any]:
    """The plan's JSON Schema (draft 2020-12), as shipped in service/plan.schema.json."""
    text = resources.files("service").joinpath("plan.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def schema_text() -> str:
    return json.dumps(schema(), indent=2) + "\n"


def objective_gid(pk: int) -> str:
    """An objective's global id, as the API shows it (schema/ids.py: "Objective:<id>",
    base64url without padding): a plan's parent outside the plan."""
    return base64.urlsafe_b64encode(f"Objective:{pk}".encode()).decode().rstrip("=")


def objective_pk(gid: str) -> int | None:
    """The row id of an objective's global id, or None when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(gid + "=" * (-len(gid) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    kind, _, number = raw.partition(":")
    if kind != "Objective" or not number.isascii() or not number.isdigit() or len(number) > 18:
        return None
    return int(number)


def _plain(value: Any) -> Any:
    """YAML's dates as ISO text (the schema speaks JSON); everything else as it is."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Loader(yaml.SafeLoader):
    """YAML's safe loader without aliases (`*name`): a few lines of them can stand for
    billions of nodes, and a plan needs none."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not taken in a plan", mark
            )
        return super().compose_node(parent, index)


def load(text: str) -> Any:
    """The document as plain JSON values; ValueError with a line when it is not YAML
    (JSON is YAML)."""
    try:
        return _plain(yaml.load(text, Loader=_Loader))  # SafeLoader's, without aliases
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML or JSON: {exc}".replace("\n", " ")) from None
    except RecursionError:
        raise ValueError("the document is nested too deeply") from None


def _segment(doc: Any, parts: list[Any]) -> str:
    """A schema error's location as a plan path: list positions become the item's key
    when it has a usable one (objectives/reduce-costs/keyResults/0/targetValue)."""
    out: list[str] = []
    node = doc
    for part in parts:
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            node = node[part]
            key = node.get("key") if isinstance(node, dict) else None
            out.append(key if isinstance(key, str) and key and "/" not in key else str(part))
        else:
            node = node.get(part) if isinstance(node, dict) else None
            out.append(str(part))
    return "/".join(out)


def _schema_problem(doc: Any, error: ValidationError) -> Problem:
    parts = list(error.absolute_path)
    message = error.message
    if error.validator == "required" and isinstance(error.instance, dict):
        named = re.match(r"^'(.+)' is a required property$", error.message)
        missing = (
            [named[1]] if named else [k for k in error.validator_value if k not in error.instance]
        )
        if missing:
            parts.append(missing[0])
            message = f"{missing[0]} is required"
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            parts.append(extra[0])
            message = f"unknown field {extra[0]!r}"
    elif error.validator == "pattern" and error.schema.get("description"):
        message = f"{error.instance!r} is not valid: {error.schema['description']}"
    return Problem(_segment(doc, parts), message)


def parse(text: str) -> tuple[Plan | None, list[Problem]]:
    """The plan, or None with every problem found (the plan is refused whole)."""
    if len(text) > MAX_DOCUMENT:
        return None, [Problem("", f"the document is longer than {MAX_DOCUMENT} characters")]
    try:
        doc = load(text)
    except ValueError as exc:
        return None, [Problem("", str(exc))]
    if doc is None:
        return None, [Problem("", "the document is empty")]
    errors = sorted(
        Draft202012Validator(schema()).iter_errors(doc), key=lambda e: list(map(str, e.path))
    )
    problems = [_schema_problem(doc, e) for e in errors]
    plan, more = _check(doc)
    if problems or more:
        return None, _unique(problems + more)
    return plan, []


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


def _date(value: str, path: str, problems: list[Problem]) -> date | None:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        problems.append(Problem(path, f"{value!r} is not a date (YYYY-MM-DD)"))
        return None
    if not rules.EARLIEST_DATE <= day <= rules.LATEST_DATE:
        problems.append(
            Problem(path, f"must lie between {rules.EARLIEST_DATE} and {rules.LATEST_DATE}")
        )
        return None
    return day


def _finite(item: dict[str, Any], name: str, path: str, problems: list[Problem]) -> None:
    value = item.get(name)
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(Problem(f"{path}/{name}", f"{name} must be a finite number"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _name_of(item: dict[str, Any], index: int) -> str:
    key = item.get("key")
    return key if isinstance(key, str) and key and "/" not in key else str(index)


def _check(doc: Any) -> tuple[Plan | None, list[Problem]]:
    """What the schema cannot say. It reads a document the schema refused as well as it
    can (the shapes it expects, where they are), so that one answer names every problem;
    the plan itself is built only from a document without any."""
    problems: list[Problem] = []
    raw_cycle = _dict(_dict(doc).get("cycle"))
    starts_on = ends_on = None
    if isinstance(raw_cycle.get("startsOn"), str):
        starts_on = _date(raw_cycle["startsOn"], "cycle/startsOn", problems)
    if isinstance(raw_cycle.get("endsOn"), str):
        ends_on = _date(raw_cycle["endsOn"], "cycle/endsOn", problems)
    if starts_on and ends_on and ends_on < starts_on:
        problems.append(Problem("cycle/endsOn", "endsOn must not be before startsOn"))
    name = raw_cycle.get("name")
    if isinstance(name, str) and name and not name.strip():
        problems.append(Problem("cycle/name", "name must not be empty"))
    objectives: list[PlanObjective] = []
    keys: set[str] = set()
    for index, item in enumerate(_list(_dict(doc).get("objectives"))):
        raw = _dict(item)
        key = _name_of(raw, index)
        path = f"objectives/{key}"
        if key in keys:
            problems.append(Problem(f"{path}/key", f"the key {key!r} is used twice"))
        keys.add(key)
        _blank(raw, path, problems)
        _finite(raw, "weight", path, problems)
        key_results: list[PlanKeyResult] = []
        kr_keys: set[str] = set()
        for kr_index, kr_item in enumerate(_list(raw.get("keyResults"))):
            kr = _dict(kr_item)
            kr_key = _name_of(kr, kr_index)
            kr_path = f"{path}/keyResults/{kr_key}"
            if kr_key in kr_keys:
                problems.append(Problem(f"{kr_path}/key", f"the key {kr_key!r} is used twice"))
            kr_keys.add(kr_key)
            _blank(kr, kr_path, problems)
            for field_name in ("weight", "startValue", "targetValue"):
                _finite(kr, field_name, kr_path, problems)
            _definition(kr, kr_path, problems)
            key_results.append(PlanKeyResult(kr_key, kr_path, dict(kr)))
        fields = {k: v for k, v in raw.items() if k != "keyResults"}
        objectives.append(PlanObjective(key, path, fields, key_results))
    problems += _loops(objectives)
    if problems or starts_on is None or ends_on is None or not isinstance(name, str):
        return None, problems
    return Plan(PlanCycle(name.strip(), starts_on, ends_on), objectives), []


def _blank(item: dict[str, Any], path: str, problems: list[Problem]) -> None:
    title = item.get("title")
    if isinstance(title, str) and title and not title.strip():
        problems.append(Problem(f"{path}/title", "title must not be empty"))


def _definition(kr: dict[str, Any], path: str, problems: list[Problem]) -> None:
    """A new key result's start and target, as createKeyResult checks them (an update's
    left-out value is the stored one: the use case checks that pair)."""
    if kr.get("type") not in set(KeyResultType):
        return  # the schema says so
    kind = KeyResultType(kr["type"])
    start, target = kr.get("startValue"), kr.get("targetValue")
    for value in (start, target):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return  # the schema says so
    if kind is not KeyResultType.MILESTONE:
        for name, value in (("startValue", start), ("targetValue", target)):
            if value is None:
                problems.append(Problem(f"{path}/{name}", f"a {kind} key result needs a {name}"))
        if start is None or target is None:
            return
    start = 0.0 if start is None else start
    target = 1.0 if target is None else target
    if not (math.isfinite(start) and math.isfinite(target)):
        return
    problem = rules.definition_error(kind, float(start), float(target))
    if problem:
        problems.append(Problem(f"{path}/targetValue", problem))


def _loops(objectives: list[PlanObjective]) -> list[Problem]:
    """Parents named by key must be keys of this plan, and make no loop."""
    by_key = {o.key: o for o in objectives}
    problems: list[Problem] = []
    parent_of: dict[str, str] = {}
    for o in objectives:
        parent = o.fields.get("parent")
        if not isinstance(parent, str):
            continue  # none, or the schema says what is wrong
        if parent in by_key:
            parent_of[o.key] = parent
        elif objective_pk(parent) is None:
            problems.append(
                Problem(
                    f"{o.path}/parent",
                    f"{parent!r} is neither the key of an objective of this plan nor an "
                    "objective's id",
                    "NOT_FOUND",
                )
            )
    reported: set[str] = set()
    for start in parent_of:
        seen = [start]
        node = start
        while node in parent_of:
            node = parent_of[node]
            if node == start:
                if not reported & set(seen):
                    chain = " -> ".join([*seen, start])
                    problems.append(
                        Problem(
                            f"objectives/{start}/parent",
                            f"the parents make a loop: {chain}",
                            "ALIGNMENT_LOOP",
                        )
                    )
                reported.update(seen)
                break
            if node in seen:
                break  # a loop further up, reported from its own members
            seen.append(node)
    return problems


def ordered(objectives: list[PlanObjective]) -> list[PlanObjective]:
    """Parents (within the plan) before their children, otherwise in file order; the
    plan has no loop (parse refused it)."""
    by_key = {o.key: o for o in objectives}
    done: set[str] = set()
    out: list[PlanObjective] = []

    def visit(o: PlanObjective) -> None:
        if o.key in done:
            return
        done.add(o.key)
        parent = o.fields.get("parent")
        if isinstance(parent, str) and parent in by_key:
            visit(by_key[parent])
        out.append(o)

    for o in objectives:
        visit(o)
    return out
