"""Limits enforced while a response is built, where the static cost cannot see: how
many objects the lists really hold (a tree's `descendants`, a team's `members`), how
long execution runs, and how large the JSON grows.

The static cost (`schema/limits.py`) refuses a document before anything runs, but a
plain list's length is known only once it is read, and graphql-core completes a list
without returning to the event loop, so an asyncio timeout cannot stop it. The budget
is checked inside execution instead, as each field resolves (the extension's `resolve`
hook): a list counts its length before graphql-core completes it, an object counts
one, a string its length towards the size. Past a bound, every field that follows
fails at once and the response becomes one error, `data` null. A subscription gets a
fresh budget for every event.

An async resolver is checked each time it is resumed, too (`Guarded`): thousands of
them wake in one turn of the event loop when their data loader answers, and each would
build its whole list before anything could count it. A response that has grown large
also lets the loop serve other requests between its steps (`Pacer`).

A mutation's root fields always run to the end (a write is never cut in half); only
the selection on their payloads is bounded, and the error says the write was applied.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import date
from enum import Enum
from types import CoroutineType
from typing import Any

import orjson
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

_SCALARS = (str, int, float, date, Enum)  # bool is an int, datetime a date

# A response past this many objects yields the event loop every SLICE seconds; smaller
# ones never wait (their data loaders' batches stay whole).
PACE_AFTER_OBJECTS = 5_000
SLICE_SECONDS = 0.05


@dataclass(frozen=True)
class Bounds:
    max_objects: int
    seconds: float
    max_bytes: int


class Budget:
    """What one response (one event, for a subscription) has used so far."""

    __slots__ = ("bounds", "chars", "deadline", "error", "objects")

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.objects = 0
        self.chars = 0  # of strings: a lower bound of the JSON's size
        self.deadline = time.monotonic() + bounds.seconds
        self.error: tuple[str, dict[str, Any]] | None = None

    def _refuse(self, message: str, **extensions: Any) -> GraphQLError:
        if self.error is None:
            self.error = (message, extensions)
        return GraphQLError(self.error[0], extensions=self.error[1])

    def too_many_objects(self) -> GraphQLError:
        n = self.bounds.max_objects
        return self._refuse(
            f"the response would hold more than {n} objects; "
            "ask for fewer levels, smaller lists or fewer fields",
            code="RESPONSE_TOO_LARGE",
            maxObjects=n,
        )

    def too_many_bytes(self) -> GraphQLError:
        n = self.bounds.max_bytes
        return self._refuse(
            f"the response would be larger than {n} bytes; ask for fewer or smaller fields",
            code="RESPONSE_TOO_LARGE",
            maxBytes=n,
        )

    def too_slow(self) -> GraphQLError:
        n = self.bounds.seconds
        return self._refuse(
            f"the request ran longer than {n:g} seconds and was stopped; ask for less at once",
            code="DEADLINE_EXCEEDED",
            maxSeconds=n,
        )

    def exhausted(self) -> bool:
        return self.error is not None or time.monotonic() > self.deadline

    def stopped(self, path: Any) -> GraphQLError:
        """The error for one more field once the budget is spent. It carries its path,
        so graphql-core passes it on as it is instead of locating a copy in the document
        (thousands of fields may fail this way in one response)."""
        if self.error is None:
            self.too_slow()
        message, extensions = self.error  # type: ignore[misc]
        return GraphQLError(message, path=path.as_list(), extensions=extensions)

    def count(self, value: Any) -> None:
        if type(value) is list:
            self.objects += len(value)
            if self.objects > self.bounds.max_objects:
                raise self.too_many_objects()
        elif type(value) is str:
            self.chars += len(value)
            if self.chars > self.bounds.max_bytes:
                raise self.too_many_bytes()
        elif value is not None and not isinstance(value, _SCALARS):
            self.objects += 1
            if self.objects > self.bounds.max_objects:
                raise self.too_many_objects()


class Pacer:
    """Time slices of the event loop for large responses: once one has run SLICE_SECONDS
    in a turn of the loop, the rest wait for the next turn, after the loop has looked
    for other work (a health check, a small query)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started: float | None = None
        self.waiting = False

    def must_wait(self) -> bool:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self.loop, self.started, self.waiting = loop, None, False
        if self.waiting:
            return True
        now = time.monotonic()
        if self.started is None:
            self.started = now
            loop.call_soon(self._next_turn)  # runs first in the next turn
            return False
        if now - self.started > SLICE_SECONDS:
            self.waiting = True
        return self.waiting

    def _next_turn(self) -> None:
        self.started, self.waiting = None, False


_pacer = Pacer()


class Guarded:
    """Awaits a resolver's coroutine step by step (as `await` does), and closes it
    instead of resuming it once the budget is spent; counts what it returns."""

    __slots__ = ("budget", "coro", "path")

    def __init__(self, budget: Budget, coro: Any, path: Any) -> None:
        self.budget = budget
        self.coro = coro
        self.path = path

    def __await__(self) -> Generator[Any, Any, Any]:
        budget, coro = self.budget, self.coro
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            if thrown is None:
                if budget.objects > PACE_AFTER_OBJECTS and _pacer.must_wait():
                    try:
                        yield None  # as asyncio.sleep(0): the next turn of the loop
                    except GeneratorExit:
                        coro.close()
                        raise
                    except BaseException as exc:  # a cancellation, passed on
                        thrown = exc
                    continue
                if budget.exhausted():
                    coro.close()
                    raise budget.stopped(self.path)
            try:
                step = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as done:
                value = done.value
                break
            try:
                sent, thrown = (yield step), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, passed on as it came
                sent, thrown = None, exc
        budget.count(value)
        return value


async def _counted(budget: Budget, pending: Awaitable[Any]) -> Any:
    value = await pending
    budget.count(value)
    return value


def response_budget(max_objects: int, seconds: float, max_bytes: int) -> type[SchemaExtension]:
    bounds = Bounds(max_objects, seconds, max_bytes)

    class ResponseBudget(SchemaExtension):
        budget: Budget | None = None
        kind = "query"  # or "mutation", "subscription"

        def on_execute(self) -> Iterator[None]:
            self.kind = self.execution_context.operation_type.value
            self.budget = Budget(bounds)
            yield
            if self.kind != "subscription":
                self._settle(self.execution_context.result, self.budget)

        def on_stream_result(self, result: Any) -> Iterator[None]:
            # Each event of a subscription; queries and mutations were settled already.
            if self.kind == "subscription":
                self._settle(result, self.budget)
            yield

        def _settle(self, result: Any, budget: Budget | None) -> None:
            """One error in place of a response past a bound (set on the result itself:
            Strawberry returns the object it holds, not the context's)."""
            if result is None or budget is None:
                return
            if budget.error is None and getattr(result, "data", None) is not None:
                try:
                    size = len(orjson.dumps(result.data))
                except TypeError:
                    size = 0  # not ours to judge: the encoder will say
                if size > max_bytes:
                    budget.too_many_bytes()
            if budget.error is None:
                return
            message, extensions = budget.error
            if self.kind == "mutation":
                message += " (the mutation itself was applied)"
            result.data = None
            result.errors = [GraphQLError(message, extensions=extensions)]

        def resolve(
            self, _next: Callable[..., Any], root: Any, info: Any, *args: Any, **kwargs: Any
        ) -> Any:
            budget = self.budget
            if info.path.prev is None:  # a root field
                if self.kind == "subscription":
                    budget = self.budget = Budget(bounds)  # one per event
                elif self.kind == "mutation":
                    return _next(root, info, *args, **kwargs)
            if budget is None:
                return _next(root, info, *args, **kwargs)
            if budget.exhausted():
                raise budget.stopped(info.path)
            value = _next(root, info, *args, **kwargs)
            if type(value) is CoroutineType:
                return Guarded(budget, value, info.path)
            if info.is_awaitable(value):
                return _counted(budget, value)
            budget.count(value)
            return value

    return ResponseBudget
