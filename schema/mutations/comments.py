"""Mutations on comments."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry import ID

from schema import ids
from schema.context import Info
from schema.mutations.common import Payload, mutate
from schema.types.comment import Comment
from service.domain.errors import invalid
from service.usecases import commands, comments


@strawberry.input
class AddCommentInput:
    subject_id: ID = strawberry.field(description="An objective or a key result.")
    body: str

    def command(self) -> commands.AddComment:
        try:
            kind, pk = ids.decode(self.subject_id)
        except ids.BadId as exc:
            raise invalid(f"subjectId: {exc}", "subjectId") from None
        if kind == "Objective":
            return commands.AddComment(self.body, objective_id=pk)
        if kind == "KeyResult":
            return commands.AddComment(self.body, key_result_id=pk)
        raise invalid("subjectId: comments go on an objective or a key result", "subjectId")


@strawberry.type
class CommentPayload(Payload):
    comment: Comment | None = None

    @classmethod
    async def of(cls, info: Info, row: Any) -> CommentPayload:
        return cls(comment=Comment.of(row))


async def add_comment(info: Info, input: AddCommentInput) -> CommentPayload:
    return await mutate(info, input.command, comments.add_comment, CommentPayload)
