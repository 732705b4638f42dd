"""Issue 13 item 9: the service is an Apollo Federation v2 subgraph.

- `_service { sdl }`: @link to federation v2, @key(fields: "id") on every node type of the
  registry, @shareable PageInfo; served only where OKR_FEDERATION is on (then even with
  introspection off).
- Issue 19: without OKR_FEDERATION, introspection (what code generators read) has no
  `_Any`, `_service`, `_entities` or any other federation type.
- `_entities`: every node type, as several principals, answered exactly as `nodes(ids:)`
  answers the same caller (hidden or other organization -> null); bad representations and
  too many of them are errors; costed like `nodes`.
- `schema/schema.graphql` (codegen's) has nothing of federation; `schema/subgraph.graphql`
  is the subgraph SDL.
- Composition with a second subgraph that extends `User`, with @apollo/composition
  (tests/federation/), skipped with the reason when node or npm is missing.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import ObjectTypeDefinitionNode, UnionTypeDefinitionNode, build_schema, parse
from graphql.language import SchemaDefinitionNode, SchemaExtensionNode

from schema import nodes
from schema.api import sdl, subgraph_sdl
from schema.ids import encode
from service.app import create_app
from service.db import Database
from service.settings import Settings
from service.usecases import organizations
from tests import factories as h
from tests.factories import JWT_SECRET, ROOT, Org


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """This module's app (the `client` and `org` fixtures) serves the subgraph."""
    return Settings(jwt_secret=JWT_SECRET, data_dir=tmp_path, database_url=None, federation=True)


ROOT = ROOT
CLIENT_SDL = ROOT / "schema" / "schema.graphql"
SUBGRAPH_SDL = ROOT / "schema" / "subgraph.graphql"
FED = ROOT / "tests" / "federation"

ENTITIES = """query($r: [_Any!]!) {
  _entities(representations: $r) { __typename ... on Node { id } ... on Objective { title } }
}"""
NODES = """query($ids: [ID!]!) {
  nodes(ids: $ids) { __typename ... on Node { id } ... on Objective { title } }
}"""

BADGES = """extend schema
  @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key", "@shareable"])

type User @key(fields: "id") {
  id: ID!
  badges: [String!]!
}

type PageInfo @shareable {
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
  endCursor: String
}

type Query {
  topBadges: [String!]!
}
"""


def _directives(node: Any) -> dict[str, list[dict[str, str]]]:
    """Each applied directive's name with its arguments (as printed values)."""
    found: dict[str, list[dict[str, str]]] = {}
    for d in node.directives or ():
        args = {a.name.value: getattr(a.value, "value", None) for a in d.arguments or ()}
        found.setdefault(d.name.value, []).append(args)
    return found


def _check_subgraph_sdl(text: str) -> None:
    document = parse(text)
    objects = {
        d.name.value: d for d in document.definitions if isinstance(d, ObjectTypeDefinitionNode)
    }
    for name in nodes.NODES:
        keys = _directives(objects[name]).get("key")
        assert keys and keys[0]["fields"] == "id", f'{name} has no @key(fields: "id")'
    assert "shareable" in _directives(objects["PageInfo"])
    links = [
        args["url"]
        for d in document.definitions
        if isinstance(d, SchemaDefinitionNode | SchemaExtensionNode)
        for args in _directives(d).get("link", [])
    ]
    assert any(url.startswith("https://specs.apollo.dev/federation/v2.") for url in links), links
    entity = next(
        d
        for d in document.definitions
        if isinstance(d, UnionTypeDefinitionNode) and d.name.value == "_Entity"
    )
    assert {t.name.value for t in entity.types} == set(nodes.NODES)


# --- the two SDL files ------------------------------------------------------------------


def test_subgraph_sdl_has_a_key_on_every_node_type_and_links_federation_2():
    assert SUBGRAPH_SDL.read_text() == subgraph_sdl(), (
        "run: okr export-schema -o schema/schema.graphql"
    )
    _check_subgraph_sdl(SUBGRAPH_SDL.read_text())


def test_client_sdl_has_nothing_of_federation():
    text = sdl()
    assert CLIENT_SDL.read_text() == text
    schema = build_schema(text)  # valid on its own: no federation directive is needed
    assert not [n for n in schema.type_map if n.startswith("_") and not n.startswith("__")]
    assert schema.query_type is not None
    assert not {"_service", "_entities"} & set(schema.query_type.fields)
    assert not {d.name for d in schema.directives} - {
        "include",
        "skip",
        "deprecated",
        "specifiedBy",
        "oneOf",
    }
    for word in ("@key", "@link", "@shareable", "_Any", "_Entity", "_Service"):
        assert word not in text
    # Every node type and field a client had is still there.
    subgraph = build_schema(subgraph_sdl().replace("extend schema", "schema"), assume_valid=True)
    for name, type_ in schema.type_map.items():
        assert name in subgraph.type_map
        assert set(getattr(type_, "fields", {})) <= set(
            getattr(subgraph.type_map[name], "fields", {})
        )


def test_export_schema_writes_the_subgraph_sdl_beside_the_client_sdl(bin_okr, tmp_path):
    out = tmp_path / "schema.graphql"
    proc = subprocess.run(
        [bin_okr, "export-schema", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(Path(bin_okr).parent), "OKR_DATA_DIR": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == CLIENT_SDL.read_text()
    assert (tmp_path / "subgraph.graphql").read_text() == SUBGRAPH_SDL.read_text()


# --- _service ---------------------------------------------------------------------------


async def test_service_sdl_is_the_subgraph_sdl(org: Org):
    text = (await org.call("{ _service { sdl } }"))["_service"]["sdl"]
    assert text + "\n" == SUBGRAPH_SDL.read_text()
    _check_subgraph_sdl(text)


async def _production_call(
    database_url: str,
    db: Database,
    tmp_path: Path,
    org: Org,
    query: str,
    variables: dict | None = None,
    **extra: Any,
) -> dict:
    settings = Settings(
        **{"env": "production", **extra},
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        data_dir=tmp_path,
    )
    app = create_app(settings, database_url)
    app.state.db = db
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://okr.test"
    ) as c:
        r = await c.post(
            "/graphql",
            headers={"Authorization": f"Bearer {org.admin_token}"},
            json={"query": query, "variables": variables or {}},
        )
        return r.json()


INTROSPECTION = """{
  __schema {
    queryType { fields { name } }
    types { name kind }
    directives { name }
  }
}"""


async def test_without_federation_introspection_has_nothing_of_it(
    database_url, db, org: Org, tmp_path
):
    # Development (introspection on), federation off: what a code generator reads.
    plain = await _production_call(
        database_url, db, tmp_path, org, INTROSPECTION, env="development"
    )
    schema = plain["data"]["__schema"]
    types = {t["name"] for t in schema["types"]}
    fields = {f["name"] for f in schema["queryType"]["fields"]}
    assert not {"_Any", "_Entity", "_Service", "FieldSet", "link__Import"} & types, types
    assert not [t for t in types if t.startswith("_") and not t.startswith("__")], types
    assert not {"_service", "_entities"} & fields
    assert "node" in fields and "Objective" in types  # the client's schema is all there
    assert not {d["name"] for d in schema["directives"]} & {"key", "link", "shareable"}
    # ... and a query naming them is a validation error, not an answer.
    for query in ("{ _service { sdl } }", ENTITIES):
        refused = await _production_call(
            database_url, db, tmp_path, org, query, {"r": []}, env="development"
        )
        assert refused.get("data") is None
        assert refused["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    # With OKR_FEDERATION the same introspection shows the subgraph's types.
    federated = await _production_call(
        database_url, db, tmp_path, org, INTROSPECTION, env="development", federation=True
    )
    schema = federated["data"]["__schema"]
    assert "_Any" in {t["name"] for t in schema["types"]}
    assert {"_service", "_entities"} <= {f["name"] for f in schema["queryType"]["fields"]}


async def test_with_federation_the_sdl_is_served_even_where_introspection_is_off(
    database_url, db, org: Org, tmp_path, monkeypatch
):
    # Production without federation: `_service` is refused like any unknown field.
    refused = await _production_call(database_url, db, tmp_path, org, "{ _service { sdl } }")
    assert refused.get("data") is None
    assert "_service" in refused["errors"][0]["message"]
    assert refused["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    # OKR_FEDERATION=1 serves the SDL to a gateway while introspection stays off ...
    monkeypatch.setenv("OKR_FEDERATION", "1")
    assert Settings(jwt_secret=JWT_SECRET, data_dir=tmp_path).federation is True
    served = await _production_call(
        database_url, db, tmp_path, org, "{ _service { sdl } }", federation=True
    )
    assert served["data"]["_service"]["sdl"] + "\n" == SUBGRAPH_SDL.read_text()
    still = await _production_call(
        database_url, db, tmp_path, org, "{ __schema { types { name } } }", federation=True
    )
    assert still.get("data") is None and still["errors"]
    # ... and `_entities` is answered (it is visibility-checked like `node`).
    rep = [{"__typename": "User", "id": encode("User", org.admin_id)}]
    found = await _production_call(
        database_url,
        db,
        tmp_path,
        org,
        "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { email } } }",
        {"r": rep},
        federation=True,
    )
    assert found["data"] == {"_entities": [{"email": "admin@acme.example"}]}, found


# --- _entities --------------------------------------------------------------------------


@dataclass
class World:
    org: Org
    ids: dict[str, str]  # a name -> the global id of an object of every node type
    outsider: str  # a token: a member in no team, owns nothing
    owner: str  # a token: owns the private objective
    teammate: str  # a token: in the team of the TEAM objective


@pytest.fixture
async def world(org: Org) -> World:
    cycle = await h.active_cycle(org)
    owner = await h.user(org, "Olga Owner")
    mate = await h.user(org, "Tim Teammate")
    outsider = await h.user(org, "Otto Outsider")
    team = await h.team(org, "Platform")
    await h.ok(org, "addTeamMember", {"teamId": team, "userId": mate}, "team { id }")
    public = await h.objective(org, cycle, "Public goal")
    private = await h.objective(org, cycle, "Secret goal", visibility="PRIVATE", ownerId=owner)
    team_only = await h.objective(org, cycle, "Team goal", visibility="TEAM", teamId=team)
    kr = await h.key_result(org, private)
    check_in = (await h.check_in(org, kr, 10))["checkIn"]["id"]
    comment = (
        await h.ok(org, "addComment", {"subjectId": private, "body": "hush"}, "comment { id }")
    )["comment"]["id"]
    metric = (
        await h.ok(org, "createMetric", {"key": "uptime", "name": "Uptime"}, "metric { id }")
    )["metric"]["id"]
    hook = (
        await h.ok(org, "createWebhookEndpoint", {"url": "http://127.0.0.1:9/x"}, "endpoint { id }")
    )["endpoint"]["id"]
    ping = (await h.ok(org, "pingWebhookEndpoint", {"endpointId": hook}, "delivery { id }"))[
        "delivery"
    ]["id"]
    feed = await org.call("{ events(first: 100) { edges { node { id kind } } } }")
    events = [e["node"] for e in feed["events"]["edges"]]
    event = next(e["id"] for e in events if e["kind"] == "CHECK_IN")
    ids = {
        "Organization": encode("Organization", org.id),
        "User": owner,
        "Team": team,
        "Cycle": cycle,
        "Objective": public,
        "private Objective": private,
        "team Objective": team_only,
        "KeyResult": kr,
        "CheckIn": check_in,
        "Comment": comment,
        "Event": event,
        "Metric": metric,
        "WebhookEndpoint": hook,
        "WebhookDelivery": ping,
    }
    assert {name.split()[-1] for name in ids} == set(nodes.NODES)  # every node type
    token = {u: org.token(int(_pk(u))) for u in (owner, mate, outsider)}
    return World(org, ids, token[outsider], token[owner], token[mate])


def _pk(gid: str) -> str:
    from schema.ids import decode

    return str(decode(gid)[1])


def _representations(ids: dict[str, str]) -> list[dict[str, str]]:
    return [{"__typename": name.split()[-1], "id": gid} for name, gid in ids.items()]


@pytest.mark.parametrize("caller", ["admin", "owner", "teammate", "outsider"])
async def test_entities_of_every_node_type_answer_as_nodes_does(world: World, caller: str):
    token = None if caller == "admin" else getattr(world, caller)
    reps = _representations(world.ids)
    entities = (await world.org.call(ENTITIES, {"r": reps}, token=token))["_entities"]
    same = (await world.org.call(NODES, {"ids": list(world.ids.values())}, token=token))["nodes"]
    assert entities == same
    got = dict(zip(world.ids, entities, strict=True))
    for name in ("Organization", "User", "Team", "Cycle", "Objective", "Metric"):
        assert got[name] == {"__typename": name, "id": world.ids[name]} | (
            {"title": "Public goal"} if name == "Objective" else {}
        )
    hidden = {"private Objective", "KeyResult", "CheckIn", "Comment", "Event"}
    webhooks = {"WebhookEndpoint", "WebhookDelivery"}  # admins only
    assert all((got[name] is not None) == (caller == "admin") for name in webhooks), got
    if caller in ("admin", "owner"):
        assert all(got[name] is not None for name in hidden)
        assert got["private Objective"]["title"] == "Secret goal"
    else:
        assert all(got[name] is None for name in hidden), got
    assert (got["team Objective"] is None) == (caller in ("owner", "outsider"))


async def test_entities_are_looked_up_never_built_from_the_representation(world: World):
    forged = {"__typename": "Objective", "id": world.ids["Objective"], "title": "Forged"}
    hidden = {"__typename": "Objective", "id": world.ids["private Objective"], "title": "Open"}
    absent = {"__typename": "Objective", "id": encode("Objective", 10**9)}
    body = await world.org.call(ENTITIES, {"r": [forged, hidden, absent]}, token=world.outsider)
    assert body["_entities"] == [
        {"__typename": "Objective", "id": world.ids["Objective"], "title": "Public goal"},
        None,
        None,
    ]


async def test_entities_of_another_organization_are_null(world: World, client, db: Database):
    rival, boss = await db.transaction(
        lambda s: organizations.create_organization(s, "Rival Freight", "boss@rival.example")
    )
    other = Org(client, db, rival.id, boss.id)
    reps = _representations(world.ids)
    got = (await other.call(ENTITIES, {"r": reps}))["_entities"]
    assert got == [None] * len(reps)
    # Its own organization is found: the null above is the boundary, not a broken lookup.
    own = [{"__typename": "Organization", "id": encode("Organization", rival.id)}]
    assert (await other.call(ENTITIES, {"r": own}))["_entities"][0] is not None


async def test_bad_representations_are_errors_for_their_item_only(world: World):
    good = {"__typename": "Team", "id": world.ids["Team"]}
    bad = [
        {"id": world.ids["Team"]},  # no __typename
        {"__typename": "Nope", "id": world.ids["Team"]},  # not an entity
        {"__typename": "PageInfo", "id": world.ids["Team"]},  # a type, not an entity
        {"__typename": "Team"},  # no id
        {"__typename": "Team", "id": 7},  # not a string
        {"__typename": "Team", "id": "not-an-id"},  # malformed
        {"__typename": "Objective", "id": world.ids["Team"]},  # another type's id
        "Team",  # not an object
    ]
    body = await world.org.call(ENTITIES, {"r": [good, *bad]}, expect_errors=True)
    assert body["data"]["_entities"][0] == {"__typename": "Team", "id": world.ids["Team"]}
    assert body["data"]["_entities"][1:] == [None] * len(bad)
    errors = sorted(body["errors"], key=lambda e: e["path"][1])
    assert [e["path"] for e in errors] == [["_entities", i] for i in range(1, len(bad) + 1)]
    for i, error in enumerate(errors, start=1):
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"].startswith(f"representations[{i}]: "), error["message"]
    assert "__typename must be one of the entities" in errors[1]["message"]
    assert "expected the id of a Objective, got one of a Team" in errors[6]["message"]


async def test_too_many_representations_are_refused(world: World):
    limit = Settings().max_page_size
    reps = [{"__typename": "Team", "id": world.ids["Team"]}] * (limit + 1)
    body = await world.org.call(ENTITIES, {"r": reps}, expect_errors=True)
    assert body["data"] is None or body["data"].get("_entities") is None
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert f"at most {limit} representations" in body["errors"][0]["message"]
    at_limit = (await world.org.call(ENTITIES, {"r": reps[:limit]}))["_entities"]
    assert len(at_limit) == limit and all(e is not None for e in at_limit)


async def test_entities_are_costed_like_nodes(world: World):
    async def cost(query: str, variables: dict) -> int:
        r = await world.org.client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {world.org.admin_token}"},
        )
        return r.json()["extensions"]["cost"]["requestedQueryCost"]

    for n in (1, 5, 40):
        ids = [world.ids["Team"]] * n
        reps = [{"__typename": "Team", "id": world.ids["Team"]}] * n
        assert await cost(ENTITIES, {"r": reps}) == await cost(NODES, {"ids": ids})
    assert await cost(ENTITIES, {"r": reps}) >= 40


# --- composition with a second subgraph -------------------------------------------------


@pytest.fixture(scope="module")
def composer() -> str:
    return h.npm_installed(FED, "to compose with @apollo/composition")


def _compose(node: str, tmp_path: Path, okr_sdl: str) -> dict:
    (tmp_path / "okr.graphql").write_text(okr_sdl)
    (tmp_path / "badges.graphql").write_text(BADGES)
    out = subprocess.run(
        [
            node,
            "compose.mjs",
            f"okr={tmp_path / 'okr.graphql'}",
            f"badges={tmp_path / 'badges.graphql'}",
        ],
        cwd=FED,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)


def test_composes_with_a_subgraph_that_extends_user(composer: str, tmp_path):
    result = _compose(composer, tmp_path, SUBGRAPH_SDL.read_text())
    assert result["errors"] == []
    supergraph = build_schema(result["supergraphSdl"], assume_valid=True)
    user = supergraph.type_map["User"]
    assert {"id", "badges", "name", "email"} <= set(user.fields)  # type: ignore[attr-defined]
    assert "topBadges" in supergraph.query_type.fields  # type: ignore[union-attr]
    assert {"objectives", "node", "nodes"} <= set(supergraph.query_type.fields)  # type: ignore[union-attr]
    # Both subgraphs resolve User by its id.
    text = result["supergraphSdl"]
    user_block = text[text.index("type User implements Node") :].split("{", 1)[0]
    assert '@join__type(graph: BADGES, key: "id")' in user_block
    assert 'graph: OKR, key: "id"' in user_block


def test_without_shareable_page_info_composition_fails(composer: str, tmp_path):
    """@shareable is what lets two Relay subgraphs both define PageInfo."""
    text = SUBGRAPH_SDL.read_text().replace("type PageInfo @shareable {", "type PageInfo {")
    assert text != SUBGRAPH_SDL.read_text()
    result = _compose(composer, tmp_path, text)
    assert result["errors"] and any("PageInfo" in e for e in result["errors"])


def test_the_subgraphs_agree_where_they_overlap_checked_from_python():
    """Without Node: the rules composition applies to the types both subgraphs define.
    A type in both is an entity keyed alike in both, or @shareable in both with the same
    fields and field types."""
    ours, theirs = parse(SUBGRAPH_SDL.read_text()), parse(BADGES)

    def objects(document: Any) -> dict[str, ObjectTypeDefinitionNode]:
        return {
            d.name.value: d
            for d in document.definitions
            if isinstance(d, ObjectTypeDefinitionNode) and d.name.value != "Query"
        }

    def fields(definition: ObjectTypeDefinitionNode) -> dict[str, str]:
        from graphql import print_ast

        return {f.name.value: print_ast(f.type) for f in definition.fields or ()}

    mine, other = objects(ours), objects(theirs)
    shared = set(mine) & set(other)
    assert shared == {"User", "PageInfo"}
    for name in shared:
        a, b = _directives(mine[name]), _directives(other[name])
        if "key" in b:
            assert [k["fields"] for k in a["key"]] == [k["fields"] for k in b["key"]] == ["id"]
            for field in fields(other[name]).keys() & fields(mine[name]).keys():
                assert field == "id", f"{name}.{field} would need @shareable"
            assert fields(mine[name])["id"] == fields(other[name])["id"] == "ID!"
        else:
            assert "shareable" in a and "shareable" in b
            assert fields(mine[name]) == fields(other[name])


async def test_entities_need_credentials_like_nodes(world: World):
    rep = [{"__typename": "Organization", "id": world.ids["Organization"]}]
    refused = await world.org.client.post(
        "/graphql", json={"query": ENTITIES, "variables": {"r": rep}}
    )
    like = await world.org.client.post(
        "/graphql", json={"query": NODES, "variables": {"ids": [world.ids["Organization"]]}}
    )
    assert refused.status_code == like.status_code == 401, refused.text
    assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert not (refused.json().get("data") or {}).get("_entities")
