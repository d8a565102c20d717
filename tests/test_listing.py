"""GET /task: the listing's filters, its pages and their cursors, a token subject's own listing, and the
plans of its statements on a table big enough for a bad plan to show (a plan regression fails here)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg2.extensions
import pytest

from flask_tasks import actions, db, listing
from flask_tasks.models import ApiError
from flask_tasks.sql import QUERIES
from tests.conftest import query
from tests.test_api import assert_error
from tests.test_auth import add_client, bearer, get_token

STATUSES = ("waiting", "running", "done", "failed", "cancelled")
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def insert_tasks(
    conn, count: int, *, types: int = 4, same_second: int = 3, subject_every: int = 0, peer_every: int = 0, t0=T0
):
    """`count` tasks of every status and `types` types, `same_second` of them created at each instant
    (so the order needs the id to break ties); every nth with a subject or a peer. Their ids."""
    rows = query(
        conn,
        """INSERT INTO tasks (type, args, status, created, run_at, expire, subject, peer)
           SELECT 'type' || (i %% %(types)s), jsonb_build_object('i', i),
                  (ARRAY['waiting', 'running', 'done', 'failed', 'cancelled'])[1 + (i / %(types)s) %% 5],
                  %(t0)s + make_interval(secs => i / %(same)s), now(), now() + interval '1 hour',
                  CASE WHEN %(subject_every)s > 0 AND i %% %(subject_every)s = 0 THEN 'alice' END,
                  CASE WHEN %(peer_every)s > 0 AND i %% %(peer_every)s = 0 THEN 'far' END
           FROM generate_series(1, %(count)s) AS i
           RETURNING id::text""",
        {
            "types": types,
            "t0": t0,
            "same": same_second,
            "count": count,
            "subject_every": subject_every,
            "peer_every": peer_every,
        },
    )
    return [row[0] for row in rows]


def expected(conn, where: str = "true", params: Any = None) -> list[str]:
    """The ids the listing should give, in its order, computed the plain way."""
    return [
        row[0]
        for row in query(conn, f"SELECT id::text FROM tasks WHERE {where} ORDER BY created DESC, id DESC", params)
    ]


def all_pages(client, path: str, limit: int, cursor: str | None = None, **request: Any) -> tuple[list[str], int]:
    """Every task id of a listing (from `cursor` on), page after page, and how many pages it took."""
    ids: list[str] = []
    pages = 0
    while True:
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        r = client.get(url, **request)
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.headers["Cache-Control"] == "no-store"
        page = r.json
        assert len(page["tasks"]) <= limit
        pages += 1
        ids += [task["id"] for task in page["tasks"]]
        cursor = page["next"]
        if cursor is None:
            return ids, pages
        assert len(page["tasks"]) == limit  # a page before the last is full
        assert pages < 10_000


# -- filters, pure -------------------------------------------------------------------------


def test_filters_are_parsed():
    f = listing.parse_filters(
        {"status": "failed, cancelled,failed", "type": "a,b", "since": "1700000000", "until": "2024-01-01T00:00:00Z"}
    )
    assert f.status == ("failed", "cancelled") and f.type == ("a", "b")
    assert f.since == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)
    assert f.until == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert f.statuses() == ("failed", "cancelled")
    assert listing.parse_filters({"since": "2024-01-01T02:00:00+02:00"}).since == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert listing.parse_filters({"since": "2024-01-01"}).since == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert listing.parse_filters({"since": "1.5"}).since == listing.EPOCH + dt.timedelta(seconds=1.5)
    assert listing.parse_filters({}).is_empty() and listing.parse_filters({"limit": "5", "cursor": "x"}).is_empty()
    assert listing.parse_filters({}).statuses() == STATUSES
    assert listing.parse_limit(None) == 50 and listing.parse_limit("500") == 500


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "nope"}, "[status]"),
        ({"status": "done,"}, "[status]"),
        ({"status": ""}, "[status]"),
        ({"type": "a,,b"}, "[type]"),
        ({"type": ",".join(f"t{i}" for i in range(101))}, "[type]"),
        ({"type": "x" * 201}, "[type]"),
        ({"type": "a\x00"}, "[type]"),
        ({"since": "yesterday"}, "[since]"),
        ({"since": "nan"}, "[since]"),
        ({"since": "-1"}, "[since]"),
        ({"until": "1e20"}, "[until]"),
        ({"until": "99999-01-01"}, "[until]"),
        ({"since": "2024-01-02", "until": "2024-01-01"}, "[since]"),
        ({"peer": ""}, "[peer]"),
        ({"subject": "s" * 201}, "[subject]"),
        ({"sort": "created"}, "[sort]"),
    ],
)
def test_a_bad_filter_is_named(params, named):
    with pytest.raises(ApiError) as caught:
        listing.parse_filters(params)
    assert caught.value.status == 400 and named in caught.value.message


@pytest.mark.parametrize("value", ["0", "501", "-1", "1.5", "ten", "", "٣"])
def test_a_bad_limit_is_400(value):
    with pytest.raises(ApiError) as caught:
        listing.parse_limit(value)
    assert caught.value.status == 400 and "[limit]" in caught.value.message


def test_a_cursor_holds_its_position_exactly():
    moment = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    task_id = str(uuid.uuid4())
    assert listing.decode_cursor(listing.encode_cursor(moment, task_id)) == (moment, uuid.UUID(task_id))


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGEgY3Vyc29y", "MTIzLzEyMw", "OTk5OTk5OTk5OTk5OTk5OTk5OTkvMQ", "é"])
def test_a_bad_cursor_is_400(cursor):
    with pytest.raises(ApiError) as caught:
        listing.decode_cursor(cursor)
    assert caught.value.status == 400 and "[cursor]" in caught.value.message


# -- over HTTP (the test client comes from loopback: an operator while nothing is configured) ------------


def test_an_empty_listing(client):
    r = client.get("/task")
    assert r.status_code == 200 and r.json == {"tasks": [], "next": None}


def test_tasks_are_listed_newest_first_as_get_shows_them(client, conn):
    posted = [client.post("/task", json={"type": "add", "args": {"x": i, "y": 1}}).json for i in range(3)]
    query(conn, "UPDATE tasks SET created = created + make_interval(secs => (args->>'x')::int)")  # distinct times
    r = client.get("/task")
    assert r.status_code == 200 and r.json["next"] is None
    assert [task["id"] for task in r.json["tasks"]] == [task["id"] for task in reversed(posted)]
    for task in r.json["tasks"]:
        assert task == client.get(f"/task/{task['id']}").json


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("/task?status=failed", "status = 'failed'"),
        ("/task?status=failed,cancelled", "status IN ('failed', 'cancelled')"),
        ("/task?status=failed&status=waiting", "status IN ('failed', 'waiting')"),
        ("/task?type=type1", "type = 'type1'"),
        ("/task?type=type1,type3&status=done", "type IN ('type1', 'type3') AND status = 'done'"),
        ("/task?type=nothing", "false"),
        ("/task?since=2025-03-01T12:00:10Z", "created >= '2025-03-01T12:00:10Z'"),
        (f"/task?until={T0.timestamp() + 20:.0f}", "created < '2025-03-01T12:00:20Z'"),
        (
            "/task?since=2025-03-01T12:00:05&until=2025-03-01T12:00:07&status=running",
            "created >= '2025-03-01T12:00:05Z' AND created < '2025-03-01T12:00:07Z' AND status = 'running'",
        ),
        ("/task?peer=far", "peer = 'far'"),
        ("/task?peer=far&status=done,failed", "peer = 'far' AND status IN ('done', 'failed')"),
        ("/task?subject=alice", "subject = 'alice'"),
        ("/task?subject=alice&type=type2", "subject = 'alice' AND type = 'type2'"),
    ],
)
def test_filters_and_pages_give_every_matching_task_once(client, conn, path, where):
    insert_tasks(conn, 300, subject_every=3, peer_every=4)
    want = expected(conn, where)
    ids, pages = all_pages(client, path, limit=7)
    assert ids == want
    assert pages == max(1, -(-len(want) // 7))


def test_paging_through_everything_with_ties_misses_and_repeats_nothing(client, conn):
    insert_tasks(conn, 1000, types=7, same_second=25)  # 25 tasks share each created time
    want = expected(conn)
    for limit in (13, 50, 500):
        ids, pages = all_pages(client, "/task", limit=limit)
        assert ids == want and len(set(ids)) == 1000 and pages == -(-1000 // limit)
    cursor, ids = "", []
    for _ in range(30):  # one at a time across ties
        page = client.get(f"/task?limit=1&cursor={cursor}" if cursor else "/task?limit=1").json
        ids.append(page["tasks"][0]["id"])
        cursor = page["next"]
    assert ids == want[:30]


def test_tasks_added_while_paging_neither_repeat_nor_hide_others(client, conn):
    insert_tasks(conn, 100)
    want = expected(conn)
    page = client.get("/task?limit=30").json
    insert_tasks(conn, 50, t0=T0 + dt.timedelta(days=1))  # newer than all: before the cursor, never on a later page
    ids = [task["id"] for task in page["tasks"]]
    more, _ = all_pages(client, "/task", limit=30, cursor=page["next"])
    assert ids + more == want


def test_a_cursor_works_with_other_filters_too(client, conn):
    insert_tasks(conn, 200)
    page = client.get("/task?limit=10").json
    rest = client.get(f"/task?status=done&limit=500&cursor={page['next']}").json
    last = page["tasks"][-1]
    want = expected(
        conn,
        "status = 'done' AND (created, id) < (SELECT created, id FROM tasks WHERE id = %s)",
        (last["id"],),
    )
    assert [task["id"] for task in rest["tasks"]] == want


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/task?status=finished", "[status]"),
        ("/task?type=", "[type]"),
        ("/task?since=soon", "[since]"),
        ("/task?until=2025-13-01", "[until]"),
        ("/task?since=1&since=2", "[since]"),
        ("/task?limit=0", "[limit]"),
        ("/task?limit=501", "[limit]"),
        ("/task?limit=abc", "[limit]"),
        ("/task?cursor=abc", "[cursor]"),
        ("/task?cursor=" + "A" * 300, "[cursor]"),
        ("/task?order=asc", "[order]"),
        ("/task?type=a%00b", "[type]"),
        ("/task?peer=%00", "[peer]"),
    ],
)
def test_a_bad_filter_over_http_is_a_400_naming_it(client, path, named):
    assert named in assert_error(client.get(path), 400)


# -- a token without the operator scope: its own tasks ----------------------------------------------


def test_a_token_lists_only_its_own_subjects_tasks(auth_app, conn):
    api = auth_app.test_client()
    alice = bearer(get_token(api, "alice", add_client(auth_app, "alice")))
    bob = bearer(get_token(api, "bob", add_client(auth_app, "bob")))
    mine = [
        api.post("/task", json={"type": "add", "args": {"x": i, "y": 0}}, headers=alice).json["id"] for i in range(5)
    ]
    bobs = api.post("/task", json={"type": "add", "args": {"x": 9, "y": 0}}, headers=bob).json["id"]
    anonymous = api.post("/task", json={"type": "add", "args": {"x": 7, "y": 0}}).json["id"]
    query(conn, "UPDATE tasks SET created = created + make_interval(secs => (args->>'x')::int)")

    remote = {"REMOTE_ADDR": "192.0.2.10"}  # not loopback: no operator rights
    ids, _ = all_pages(api, "/task", 2, headers=alice, environ_base=remote)
    assert ids == list(reversed(mine))
    ids, _ = all_pages(api, "/task?subject=alice&type=add", 2, headers=alice, environ_base=remote)
    assert ids == list(reversed(mine))
    r = api.get("/task", headers=bob, environ_base=remote)
    assert [task["id"] for task in r.json["tasks"]] == [bobs]
    assert "own" in assert_error(api.get("/task?subject=alice", headers=bob), 403)
    assert r.status_code == 200 and anonymous not in r.get_data(as_text=True)
    # The loopback operator sees them all; a token never makes its request less than that subject's.
    everything = [task["id"] for task in api.get("/task?limit=500").json["tasks"]]
    assert set(everything) == {*mine, bobs, anonymous}
    assert [task["id"] for task in api.get("/task", headers=alice).json["tasks"]] == list(reversed(mine))


@pytest.fixture
def auth_app(settings, registry):
    import dataclasses

    from flask_tasks.web import create_app
    from tests.test_auth import make_key, private_pem

    return create_app(dataclasses.replace(settings, jwt_private_pem=private_pem(make_key())), registry)


# -- the plans: every listing reads an index, never the whole table ---------------------------------

PLAN_ROWS = 60_000
ALLOWED_INDEXES = {
    "list_tasks_page": {"tasks_list_idx", "tasks_running_idx", "tasks_pkey"},
    "list_subject_tasks_page": {"tasks_subject_created_idx"},
    "list_peer_tasks_page": {"tasks_peer_created_idx"},
}


def plan_nodes(node: dict) -> list[dict]:
    found = [node]
    for child in node.get("Plans", []):
        found += plan_nodes(child)
    return found


def check_plan(plan: dict, statement: str, most_sorted: int) -> None:
    """No scan of tasks but through the statement's indexes, and no sort of more rows than its branches give."""
    for node in plan_nodes(plan):
        kind = node["Node Type"]
        if node.get("Relation Name") == "tasks":
            assert kind in ("Index Scan", "Index Only Scan"), f"{statement}: a {kind} on tasks"
            assert node["Index Name"] in ALLOWED_INDEXES[statement], f"{statement}: reads {node['Index Name']}"
        assert kind not in ("Bitmap Heap Scan", "Seq Scan") or node.get("Relation Name") != "tasks"
        if kind in ("Sort", "Incremental Sort"):
            sorted_rows = sum(child.get("Actual Rows", 0) * child.get("Actual Loops", 1) for child in node["Plans"])
            assert sorted_rows <= most_sorted, f"{statement}: sorts {sorted_rows} rows"
            assert node.get("Sort Method") != "external merge", f"{statement}: a sort spilled to disk"


@pytest.fixture(scope="module")
def big_table(server_url, template_url):
    """A database with PLAN_ROWS tasks (5 statuses, 10 types, a few subjects and peers), analyzed."""
    from tests.conftest import cloned_database

    databases = cloned_database(server_url, template_url, "flask_tasks_plans")
    url = next(databases)
    conn = db.connect(url, "flask-tasks tests")
    query(
        conn,
        """INSERT INTO tasks (type, args, status, created, run_at, expire, subject, peer)
           SELECT 'type' || (i %% 10), '{}',
                  (ARRAY['done', 'done', 'done', 'failed', 'cancelled', 'waiting', 'running'])[1 + (i / 10) %% 7],
                  now() - make_interval(secs => i), now(), now() + interval '1 hour',
                  CASE WHEN i %% 50 = 0 THEN 'client' || (i %% 3) END,
                  CASE WHEN i %% 500 = 0 THEN 'far' END
           FROM generate_series(1, %s) AS i""",
        (PLAN_ROWS,),
    )
    query(conn, "VACUUM ANALYZE tasks")
    yield conn
    conn.close()
    next(databases, None)


LIMIT = 50
PLAN_CASES = [
    ("status and type", {"status": "failed", "type": "type3"}, 1),
    ("status", {"status": "done"}, 10),
    ("running", {"status": "running"}, 10),
    ("running, status and type", {"status": "running", "type": "type3"}, 1),
    ("two statuses", {"status": "waiting,running"}, 20),
    ("no filter", {}, 50),
    ("types", {"type": "type1,type2"}, 10),
    ("times", {"since": "2000-01-01", "until": "2100-01-01"}, 50),
    ("subject", {"subject": "client1"}, None),
    ("subject and status", {"subject": "client1", "status": "done"}, None),
    ("peer", {"peer": "far"}, None),
]


@pytest.mark.parametrize(("case", "params", "branches"), PLAN_CASES, ids=[case[0] for case in PLAN_CASES])
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_every_listing_reads_an_index_and_sorts_little(big_table, case, params, branches, generic):
    filters = listing.parse_filters(params)
    statement = (
        "list_subject_tasks_page" if filters.subject else "list_peer_tasks_page" if filters.peer else "list_tasks_page"
    )
    # A later page, with a cursor: the listing must seek to it, not read up to it.
    middle = query(big_table, "SELECT created, id FROM tasks ORDER BY created DESC, id DESC OFFSET 100 LIMIT 1")[0]
    for after in ((None, None), middle):
        values = {**filters.params(), "after_created": after[0], "after_id": after[1], "limit": LIMIT + 1}
        plan = explain(big_table, statement, values, generic)
        # Only the branches' own rows may be sorted: (limit + 1) from each status and type, or one page.
        check_plan(plan, statement, (LIMIT + 1) * (branches or 1) + 1)
        assert plan["Actual Rows"] == LIMIT + 1 or statement != "list_tasks_page"


def explain(conn: psycopg2.extensions.connection, statement: str, values: dict, generic: bool) -> dict:
    """The plan of a named statement run with these values (EXPLAIN ANALYZE, rolled back); generic: as a prepared
    statement runs once PostgreSQL settles on a plan for any parameters."""
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            if generic:
                prepare, names = db.PREPARED[statement]
                cur.execute("DEALLOCATE ALL")
                cur.execute(prepare)
                cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                placeholders = ", ".join(["%s"] * len(names))
                cur.execute(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {statement}({placeholders})", [values[n] for n in names]
                )
            else:
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES[statement], values)
            (explained,) = cur.fetchone()
    finally:
        conn.rollback()  # the rows a bulk action's statement locked
        conn.autocommit = True
    return (explained if isinstance(explained, list) else json.loads(explained))[0]["Plan"]


@pytest.mark.parametrize("status", ["done", "running"])
def test_a_bulk_actions_batch_is_read_along_an_index_in_its_generic_plan(big_table, status):
    # Running tasks are in tasks_running_idx, the others in tasks_list_idx: each form of pick_batch names
    # its index's predicate, or a generic plan (a status as a parameter) could read neither.
    ((suffix, _),) = actions.by_status_index([status])
    values = {**listing.Filters().params(), "action": "cancel", "status": status, "type": "type3", "batch": LIMIT}
    values |= {"started": None, "after_created": None, "after_id": None}
    plan = explain(big_table, "pick_batch" + suffix, values, generic=True)
    scans = {node.get("Index Name") for node in plan_nodes(plan) if node.get("Relation Name") == "tasks"}
    assert ("tasks_running_idx" if status == "running" else "tasks_list_idx") in scans, plan
    assert not [node for node in plan_nodes(plan) if node["Node Type"] == "Seq Scan"], plan
