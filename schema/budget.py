"""Limits enforced while a response is built, where the static cost cannot see: how
many objects the lists really hold (a tree's `descendants`, a team's `members`), how
long execution runs, and how large the JSON grows.

The static cost (`schema/limits.py`) refuses a document before anything runs, but a
plain list's length is known only once it is read, and graphql-core completes a list
without returning to the event loop, so an asyncio timeout cannot stop it. The budget
is checked inside execution instead, by the executor as it completes values: an object
counts one, a string its length towards the size, a list is refused before its items
are completed when they would not fit, and the deadline is looked at on every list and
object. Past a bound, every value that follows fails at once and the response becomes
one error, `data` null. A subscription gets a fresh budget for every event.

An async resolver is checked each time it is resumed, too (`Guarded`): thousands of
them wake in one turn of the event loop when their data loader answers, and each would
build its whole list before anything could count it. Each resumed resolver also waits
its turn once the loop's current turn has run a slice (service/pacing.py), so that other
requests are served between the steps of a large response. A read (not a write) ends at
its deadline wherever it waits (`_within_deadline`): its statements are cancelled.

A mutation's root fields always run to the end (a write is never cut in half); only
the selection on their payloads is bounded, and the error says the write was applied.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from dataclasses import dataclass
from types import CoroutineType
from typing import Any

import orjson
from graphql import ExecutionResult, GraphQLError
from graphql.execution import Executor
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from service.pacing import pacer

# A response past this many objects waits its turn of the loop (service/pacing.py);
# smaller ones never wait, so that their data loaders' batches stay whole (the statement
# count of a read does not depend on how loaded the machine is).
PACE_AFTER_OBJECTS = 1_000


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


def loop_deadline(budget: Budget) -> float:
    """The budget's deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (budget.deadline - time.monotonic())


class Guarded:
    """Awaits a resolver's coroutine step by step, as `await` does. Once the budget is
    spent it does not resume it with its data: it cancels it there, as a task is
    cancelled (its `async with` blocks close their connections), then fails with the
    budget's error."""

    __slots__ = ("budget", "coro", "path")

    def __init__(self, budget: Budget, coro: Any, path: Any) -> None:
        self.budget = budget
        self.coro = coro
        self.path = path

    def __await__(self) -> Generator[Any, Any, Any]:
        budget, coro = self.budget, self.coro
        sent: Any = None
        thrown: BaseException | None = None
        stopping = False
        while True:
            if thrown is None and not stopping:
                if budget.objects > PACE_AFTER_OBJECTS and pacer.must_wait():
                    try:
                        yield from pacer.turn().__await__()  # a later turn of the loop
                    except GeneratorExit:
                        coro.close()
                        raise
                    except BaseException as exc:  # a cancellation, passed on
                        thrown = exc
                    continue
                if budget.exhausted():
                    stopping, thrown = True, asyncio.CancelledError()
            try:
                step = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as done:
                if stopping:
                    raise budget.stopped(self.path) from None
                value = done.value
                break
            except asyncio.CancelledError:
                if stopping:
                    raise budget.stopped(self.path) from None
                raise
            try:
                sent, thrown = (yield step), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, passed on as it came
                sent, thrown = None, exc
        return value


def budget_executor(max_objects: int, seconds: float, max_bytes: int) -> type[Executor]:
    """Strawberry's executor, counting as it completes values: one budget per operation,
    and one per event of a subscription."""
    bounds = Bounds(max_objects, seconds, max_bytes)

    class BudgetExecutor(StrawberryGraphQLCoreExecutionContext):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.budget = Budget(bounds)
            # A mutation's root fields are never stopped: a write is not cut off.
            self.writes = self.operation.operation.value == "mutation"

        def execute_operation(self, serially: bool | None = None) -> Any:
            result = super().execute_operation(serially)
            if self.writes or not self.is_awaitable(result):
                return result
            return self._within_deadline(result)

        async def _within_deadline(self, result: Any) -> Any:
            """A read ends at its deadline wherever it waits: a statement still running
            is cancelled (asyncpg cancels it in the database), a data loader's waiters
            are let go, and the response is the budget's one error."""
            budget = self.budget
            timer = asyncio.timeout_at(loop_deadline(budget))
            try:
                async with timer:
                    return await result
            except TimeoutError:
                if not timer.expired():
                    raise
                budget.too_slow()
                return self.build_response(None)

        def build_per_event_executor(self, payload: Any) -> Executor:
            executor = super().build_per_event_executor(payload)
            executor.budget = Budget(bounds)  # type: ignore[attr-defined]
            return executor

        def complete_awaitable_value(
            self,
            return_type: Any,
            field_details_list: Any,
            info: Any,
            path: Any,
            result: Any,
            position_context: Any,
        ) -> Any:
            if type(result) is CoroutineType and not (path.prev is None and self.writes):
                result = Guarded(self.budget, result, path)
            return super().complete_awaitable_value(
                return_type, field_details_list, info, path, result, position_context
            )

        def complete_list_value(
            self,
            return_type: Any,
            field_details_list: Any,
            info: Any,
            path: Any,
            result: Any,
            position_context: Any,
        ) -> Any:
            budget = self.budget
            if budget.exhausted():
                raise budget.stopped(path)
            if type(result) is list and budget.objects + len(result) > max_objects:
                # Refused before its items are completed (each counts as it is).
                budget.too_many_objects()
                raise budget.stopped(path)
            return super().complete_list_value(
                return_type, field_details_list, info, path, result, position_context
            )

        def complete_object_value(
            self,
            return_type: Any,
            field_details_list: Any,
            info: Any,
            path: Any,
            result: Any,
            position_context: Any,
        ) -> Any:
            budget = self.budget
            budget.objects += 1
            if budget.objects > max_objects:
                budget.too_many_objects()
            if budget.exhausted():
                raise budget.stopped(path)
            return super().complete_object_value(
                return_type, field_details_list, info, path, result, position_context
            )

        # graphql-core declares it a staticmethod but calls it through `self`.
        def complete_leaf_value(self, return_type: Any, result: Any) -> Any:  # type: ignore[override]
            if type(result) is str:
                budget = self.budget
                budget.chars += len(result)
                if budget.chars > max_bytes:
                    raise budget.too_many_bytes()
            return super().complete_leaf_value(return_type, result)

        def build_response(self, data: dict[str, Any] | None) -> Any:
            """One error in place of a response past a bound."""
            result = super().build_response(data)
            budget = self.budget
            if budget.error is None and data is not None:
                try:
                    size = len(orjson.dumps(data))
                except TypeError:
                    size = 0  # not ours to judge: the encoder will say
                if size > max_bytes:
                    budget.too_many_bytes()
            if budget.error is None:
                return result
            message, extensions = budget.error
            if self.writes:
                message += " (the mutation itself was applied: see extensions.written)"
                written = getattr(self.context_value, "written", None) or {}
                extensions = {**extensions, "written": written}
            return ExecutionResult(None, [GraphQLError(message, extensions=extensions)])

    return BudgetExecutor
