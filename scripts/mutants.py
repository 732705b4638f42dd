"""A small mutation tester for the pure OKR rules (issue 14, item 7).

    .venv/bin/python scripts/mutants.py [--module service/domain/rules.py] [tests ...] [-v]

It parses the rules module, makes one simple mutant per site and operator, and runs the
rules' table tests against each mutant in a forked child (the tests of the pure rules need
no database, so `--noconftest`). A mutant is *killed* when a test fails (or the mutant does
not even import), *survived* when every test passes, *equivalent* when it is listed in
EQUIVALENT below with the reason no test can tell it from the original.

The operators:
  - arithmetic swaps: + <-> -, * <-> /, ** -> *
  - comparison swaps and boundary flips: < -> <= and >, <= -> < and >=, (mirrored for > and
    >=), == <-> !=, is <-> is not, in <-> not in
  - numeric constants +1 and -1 (a change that leaves the float equal is no mutant)
  - True <-> False, and <-> or, `not x` -> `x`, `-x` -> `x`
  - `return x` -> `return None`

Prints each survivor with its line, then `killed K, survived S, equivalent E (of N)`.
Exit status 0 only when nothing survives. Not part of scripts/test.sh: it takes minutes
(about 4 on 2 idle cores; each mutant is a fork of one collected test session).

Issue 14 item 7, measured with this script over the rules (service/domain/rules.py today)
and tests/domain/test_rules.py:
before the item-7 rows, 392 mutants: 320 killed, 68 survived, 4 equivalent; after them,
364 killed, 0 survived, 28 equivalent (listed in _EQUIVALENT with their reasons).
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FunctionType, ModuleType

import pytest
from _pytest.runner import runtestprotocol

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60  # a mutant whose tests run longer than this is counted as killed (a hang)

# Mutants no test can tell from the original, as (scope, original, mutant, reason): original
# and mutant are the unparsed statement (or condition) that changed, so the list survives
# edits that move lines. Each reason is one line and is printed beside the mutant.
_BOUND = "a bound the use cases enforce (service/usecases/common.py); no rule reads it"
_ORIGIN = "a least-squares line does not depend on the instant its x is measured from"
_CENTRED = "sum((x - mx) * (y - my)) equals it, since the centred values sum to zero"
_STRICT = "xs and ys are built from the same points, so they are always of one length"
_ZERO_TOP = "top is 0 only when every value is 0: the slope is 0 whatever scales it"
_SLOPE_FORECAST = "slope = sum(((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))) / sxx"
_SLOPE_FORECAST_X = "slope = sum(((x + mx) * (y - my) for x, y in zip(xs, ys, strict=True))) / sxx"
_SLOPE_FORECAST_Y = "slope = sum(((x - mx) * (y + my) for x, y in zip(xs, ys, strict=True))) / sxx"
_SLOPE_NOT_STRICT = "slope = sum(((x - mx) * (y - my) for x, y in zip(xs, ys, strict=False))) / sxx"
_YS = "ys = [v / top for _, v in points] if top > 0 else [{} for _ in points]"
_SCALE = "slope = slope * top if top {} else slope"
_EQUIVALENT: list[tuple[str, str, str, str]] = [
    ("<module>", "MAX_WEIGHT = 1000.0", "MAX_WEIGHT = 1001.0", _BOUND),
    ("<module>", "MAX_WEIGHT = 1000.0", "MAX_WEIGHT = 999.0", _BOUND),
    (
        "<module>",
        "MAX_MAGNITUDE = 1000000000000000.0",
        "MAX_MAGNITUDE = 1000000000000001.0",
        _BOUND,
    ),
    ("<module>", "MAX_MAGNITUDE = 1000000000000000.0", "MAX_MAGNITUDE = 999999999999999.0", _BOUND),
    ("<module>", "EARLIEST_DATE = date(1900, 1, 1)", "EARLIEST_DATE = date(1901, 1, 1)", _BOUND),
    ("<module>", "EARLIEST_DATE = date(1900, 1, 1)", "EARLIEST_DATE = date(1899, 1, 1)", _BOUND),
    ("<module>", "EARLIEST_DATE = date(1900, 1, 1)", "EARLIEST_DATE = date(1900, 2, 1)", _BOUND),
    ("<module>", "EARLIEST_DATE = date(1900, 1, 1)", "EARLIEST_DATE = date(1900, 1, 2)", _BOUND),
    ("<module>", "LATEST_DATE = date(2999, 12, 31)", "LATEST_DATE = date(3000, 12, 31)", _BOUND),
    ("<module>", "LATEST_DATE = date(2999, 12, 31)", "LATEST_DATE = date(2998, 12, 31)", _BOUND),
    ("<module>", "LATEST_DATE = date(2999, 12, 31)", "LATEST_DATE = date(2999, 12, 30)", _BOUND),
    (
        "clamp",
        "return lo if x <= lo else hi if x >= hi else x",
        "return lo if x <= lo else hi if x > hi else x",
        "x == hi returns x, which is hi (1.0 has one sign)",
    ),
    ("forecast", "origin = points[0][0]", "origin = points[1][0]", _ORIGIN),
    ("forecast", "origin = points[0][0]", "origin = points[-1][0]", _ORIGIN),
    ("forecast", _SLOPE_FORECAST, _SLOPE_FORECAST_X, _CENTRED),
    ("forecast", _SLOPE_FORECAST, _SLOPE_NOT_STRICT, _STRICT),
    ("_slope_per_week", "origin = points[0][0]", "origin = points[1][0]", _ORIGIN),
    ("_slope_per_week", "origin = points[0][0]", "origin = points[-1][0]", _ORIGIN),
    ("_slope_per_week", _YS.format("0.0"), _YS.format("1.0"), _ZERO_TOP),
    ("_slope_per_week", _YS.format("0.0"), _YS.format("-1.0"), _ZERO_TOP),
    (
        "_slope_per_week",
        "mx, my = (sum(xs) / n, sum(ys) / n)",
        "mx, my = (sum(xs) / n, sum(ys) * n)",
        "sum((x - mx) * (y - c)) is the same for every c, since sum(x - mx) is zero",
    ),
    ("_slope_per_week", _SLOPE_FORECAST, _SLOPE_FORECAST_X, _CENTRED),
    ("_slope_per_week", _SLOPE_FORECAST, _SLOPE_FORECAST_Y, _CENTRED),
    ("_slope_per_week", _SLOPE_FORECAST, _SLOPE_NOT_STRICT, _STRICT),
    ("_slope_per_week", _SCALE.format("> 0"), _SCALE.format(">= 0"), _ZERO_TOP),
    ("_slope_per_week", _SCALE.format("> 0"), _SCALE.format("> -1"), _ZERO_TOP),
    (
        "realism_from_fit",
        "observed <= 0 or ratio is None",
        "observed < 0 or ratio is None",
        "with observed <= 0 there is no ratio: `ratio is None` gives the same verdict",
    ),
    (
        "realism_from_fit",
        "observed <= 0 or ratio is None",
        "observed <= -1 or ratio is None",
        "with observed <= 0 there is no ratio: `ratio is None` gives the same verdict",
    ),
]
EQUIVALENT: dict[tuple[str, str, str], str] = {(s, b, a): why for s, b, a, why in _EQUIVALENT}


@dataclass(frozen=True)
class Mutant:
    index: int
    line: int
    scope: str
    before: str
    after: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.scope, self.before, self.after)


_ARITH: dict[type[ast.operator], list[type[ast.operator]]] = {
    ast.Add: [ast.Sub],
    ast.Sub: [ast.Add],
    ast.Mult: [ast.Div],
    ast.Div: [ast.Mult],
    ast.Pow: [ast.Mult],
}
_CMP: dict[type[ast.cmpop], list[type[ast.cmpop]]] = {
    ast.Lt: [ast.LtE, ast.Gt],
    ast.LtE: [ast.Lt, ast.GtE],
    ast.Gt: [ast.GtE, ast.Lt],
    ast.GtE: [ast.Gt, ast.LtE],
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
    ast.Is: [ast.IsNot],
    ast.IsNot: [ast.Is],
    ast.In: [ast.NotIn],
    ast.NotIn: [ast.In],
}


class _Sites(ast.NodeVisitor):
    """Walks the module in a fixed order and yields (node, scope, apply) per mutation; each
    `apply` mutates the node in place and returns the node (or statement) that changed."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.found: list[tuple[ast.AST, str, int, object]] = []
        self._stmt: ast.stmt | None = None

    def _add(self, node: ast.AST, how: object) -> None:
        self.found.append((node, ".".join(self.scope) or "<module>", len(self.found), how))

    # --- structure: scopes, docstrings and annotations are not mutated ---------------

    def _body(self, body: list[ast.stmt]) -> None:
        for i, stmt in enumerate(body):
            if (
                i == 0
                and isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                continue  # a docstring
            self.visit(stmt)

    def visit_Module(self, node: ast.Module) -> None:
        self._body(node.body)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        return

    def visit_Import(self, node: ast.Import) -> None:
        return

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.scope.append(node.name)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(default)
        self._body(node.body)
        self.scope.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self._body(node.body)
        self.scope.pop()

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # messages are not rules

    # --- mutation sites --------------------------------------------------------------

    def visit_BinOp(self, node: ast.BinOp) -> None:
        for new in _ARITH.get(type(node.op), []):
            self._add(node, ("binop", new))
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for i, op in enumerate(node.ops):
            for new in _CMP.get(type(op), []):
                self._add(node, ("cmp", i, new))
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self._add(node, ("boolop",))
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, (ast.Not, ast.USub)):
            self._add(node, ("unary",))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, bool):
            self._add(node, ("const", not v))
        elif isinstance(v, (int, float)):
            for new in (v + 1, v - 1):
                if new != v:  # 1e308 + 1 is 1e308: no mutant
                    self._add(node, ("const", new))

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None
        ):
            self._add(node, ("return",))
        self.generic_visit(node)


def _statement_of(tree: ast.Module, target: ast.AST) -> ast.AST:
    """The innermost simple statement holding `target` (what a reader sees change)."""
    best: ast.AST = target
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not isinstance(
            node, (ast.FunctionDef, ast.ClassDef, ast.If, ast.For, ast.While, ast.Try)
        ):
            if any(child is target for child in ast.walk(node)):
                best = node
    if best is target:  # a condition of an if/while: show the condition itself
        for node in ast.walk(tree):
            if isinstance(node, (ast.If, ast.While)) and any(
                child is target for child in ast.walk(node.test)
            ):
                best = node.test
    return best


def _apply(tree: ast.Module, index: int) -> tuple[ast.Module, Mutant]:
    tree = copy.deepcopy(tree)
    sites = _Sites()
    sites.visit(tree)
    node, scope, _, how = sites.found[index]
    shown = _statement_of(tree, node)
    if isinstance(shown, ast.If):
        shown = shown.test
    before = ast.unparse(shown)
    kind = how[0]  # type: ignore[index]
    replacement: ast.AST | None = None
    if kind == "binop":
        assert isinstance(node, ast.BinOp)
        node.op = how[1]()  # type: ignore[index]
    elif kind == "cmp":
        assert isinstance(node, ast.Compare)
        node.ops[how[1]] = how[2]()  # type: ignore[index]
    elif kind == "boolop":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "unary":
        assert isinstance(node, ast.UnaryOp)
        replacement = node.operand
    elif kind == "const":
        assert isinstance(node, ast.Constant)
        node.value = how[1]  # type: ignore[index]
    elif kind == "return":
        assert isinstance(node, ast.Return)
        node.value = ast.Constant(None)
    if replacement is not None:
        _replace(tree, node, replacement)
        if shown is node:
            shown = replacement
    after = ast.unparse(shown)
    ast.fix_missing_locations(tree)
    return tree, Mutant(index, getattr(node, "lineno", 0), scope, before, after)


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return


def count_sites(tree: ast.Module) -> int:
    sites = _Sites()
    sites.visit(tree)
    return len(sites.found)


def _module_name(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts)


def _patch(module: ModuleType, tree: ast.Module) -> None:
    """Make the loaded module behave as the mutated source: the functions take the mutant's
    code and defaults, dataclasses its field defaults, module constants its values. Classes
    and enums stay the same objects, so the values the tests built at collection still match."""
    namespace: dict[str, object] = {"__name__": module.__name__, "__file__": module.__file__}
    exec(compile(tree, str(module.__file__), "exec"), namespace)
    for name, old in list(vars(module).items()):
        new = namespace.get(name)
        if isinstance(old, FunctionType) and old.__module__ == module.__name__:
            assert isinstance(new, FunctionType)
            old.__code__ = new.__code__
            old.__defaults__ = new.__defaults__
            old.__kwdefaults__ = new.__kwdefaults__
        elif isinstance(old, type) and old.__module__ == module.__name__:
            assert isinstance(new, type)
            if dataclasses.is_dataclass(old):
                init = old.__init__  # type: ignore[misc]
                init.__defaults__ = new.__init__.__defaults__  # type: ignore[misc]
        elif not isinstance(old, ModuleType) and not name.startswith("__"):
            try:
                same = type(old) is type(new) and bool(old == new)
            except Exception:
                same = False
            if not same:
                setattr(module, name, new)


class _Runner:
    """A pytest plugin: collect once, then run the collected tests in a forked child per
    mutant (and once unmutated), stopping at the first failure."""

    def __init__(self, module_name: str, mutants: list[tuple[ast.Module, Mutant]], jobs: int):
        self.module_name = module_name
        self.mutants = mutants
        self.jobs = jobs
        self.outcome: dict[int, str] = {}
        self.baseline_ok = False

    def _fork(self, items: list[pytest.Item], tree: ast.Module | None) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            signal.alarm(TIMEOUT_S)  # a hang is killed by the alarm, and counts as killed
            if tree is not None:
                _patch(sys.modules[self.module_name], tree)
            for i, item in enumerate(items):
                nextitem = items[i + 1] if i + 1 < len(items) else None
                reports = runtestprotocol(item, log=False, nextitem=nextitem)
                if any(r.failed for r in reports):
                    os._exit(1)
            code = 0
        except BaseException:  # a mutant that cannot even load is killed
            code = 1
        os._exit(code)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        items = list(session.items)
        if self.module_name not in sys.modules or not items:
            raise SystemExit(f"the tests do not import {self.module_name}")
        _, status = os.waitpid(self._fork(items, None), 0)
        self.baseline_ok = status == 0
        if not self.baseline_ok:
            return True
        queue = list(self.mutants)
        running: dict[int, Mutant] = {}
        while queue or running:
            while queue and len(running) < self.jobs:
                tree, mutant = queue.pop(0)
                running[self._fork(items, tree)] = mutant
            pid, status = os.wait()
            mutant = running.pop(pid)
            self.outcome[mutant.index] = "survived" if status == 0 else "killed"
        return True


def main(argv: list[str] | None = None) -> int:
    default_module = ROOT / "service" / "domain" / "rules.py"
    if not default_module.exists():
        default_module = ROOT / "service" / "rules.py"
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("tests", nargs="*", help="test files (default: the rules' tests)")
    parser.add_argument("--module", type=Path, default=default_module)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("-v", "--verbose", action="store_true", help="list every mutant")
    args = parser.parse_args(argv)
    domain_tests = sorted((ROOT / "tests" / "domain").glob("test_*.py"))
    tests = args.tests or [str(p) for p in domain_tests]
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    path: Path = args.module.resolve()
    module_name = _module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    total = count_sites(tree)
    mutants = [_apply(tree, i) for i in range(total)]

    started = time.monotonic()
    runner = _Runner(module_name, mutants, args.jobs)
    pytest.main(
        ["-qq", "--noconftest", "-p", "no:cacheprovider", "-o", "addopts=", *tests],
        plugins=[runner],
    )
    if not runner.baseline_ok:
        print("the tests fail on the unmutated module: fix them first", file=sys.stderr)
        return 2

    equivalent_used: set[tuple[str, str, str]] = set()
    counts = {"killed": 0, "survived": 0, "equivalent": 0}
    for _, mutant in mutants:
        state = runner.outcome[mutant.index]
        if state == "survived" and mutant.key in EQUIVALENT:
            state = "equivalent"
            equivalent_used.add(mutant.key)
        counts[state] += 1
        if state != "killed" or args.verbose:
            note = f"  # {EQUIVALENT[mutant.key]}" if state == "equivalent" else ""
            print(
                f"{state:10} {path.name}:{mutant.line} in {mutant.scope}: "
                f"{mutant.before}  ->  {mutant.after}{note}"
            )
    for key in EQUIVALENT.keys() - equivalent_used:
        killed = any(m.key == key for _, m in mutants)
        print(f"note: listed as equivalent but {'killed' if killed else 'not found'}: {key}")
    print(
        f"killed {counts['killed']}, survived {counts['survived']}, "
        f"equivalent {counts['equivalent']} (of {total} mutants of {path.relative_to(ROOT)}, "
        f"{time.monotonic() - started:.0f} s)"
    )
    return 0 if counts["survived"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
