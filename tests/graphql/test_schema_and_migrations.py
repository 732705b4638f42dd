"""The migrations build exactly the models, both ways; the exported SDL is the code's."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from schema.api import sdl, subgraph_sdl
from service import migrate, models
from tests.factories import ROOT

SDL_FILE = ROOT / "schema" / "schema.graphql"
SUBGRAPH_FILE = SDL_FILE.parent / "subgraph.graphql"  # the federation subgraph's SDL


def test_exported_schema_matches_the_code():
    assert SDL_FILE.read_text() == sdl(), "run: okr export-schema -o schema/schema.graphql"
    assert SUBGRAPH_FILE.read_text() == subgraph_sdl(), (
        "run: okr export-schema -o schema/schema.graphql"
    )


async def _diff_and_tables(url: str) -> tuple[list, set[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:

            def compare(sync_conn):
                ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return compare_metadata(ctx, models.metadata), set(
                    inspect(sync_conn).get_table_names()
                )

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def test_upgrade_gives_the_models_and_downgrade_removes_them(pg, database_url):
    # database_url is already at head (copied from the migrated template)
    diff, tables = await _diff_and_tables(database_url)
    assert diff == []
    assert set(models.metadata.tables) <= tables
    await asyncio.to_thread(migrate.downgrade, database_url, "base")
    _diff, tables = await _diff_and_tables(database_url)
    assert tables == {"alembic_version"}
    await asyncio.to_thread(migrate.upgrade, database_url)
    diff, _tables = await _diff_and_tables(database_url)
    assert diff == []
    assert await migrate.current_revision(database_url) == migrate.head_revision()
