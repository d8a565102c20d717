"""Tasks that misbehave: each ends failed with a readable error and the handler lives on."""

from __future__ import annotations

from tests.conftest import enqueue, wait_for
from tests.test_handler import finished

CASES = [
    # (type, args, options, status, start of the error message)
    ("boom", {"message": "disk full"}, {}, "failed", "RuntimeError: disk full"),
    ("sleep", {"seconds": 30}, {"timeout": 0.5, "max_attempts": 1}, "failed", "timeout: the task ran longer than"),
    ("spin", {}, {}, "failed", "timeout: the task ran longer than its 0.5 s"),
    ("not_json", {}, {"max_attempts": 1}, "failed", "the result is not JSON-serialisable"),
    ("nul_string", {}, {"max_attempts": 1}, "failed", "the result cannot be stored"),
    ("eat_memory", {"megabytes": 4000}, {}, "failed", "MemoryError"),
    ("segfault", {}, {}, "failed", "the isolated process was killed by SIGSEGV"),
    ("hard_exit", {"code": 7}, {}, "failed", "the isolated process exited with code 7"),
    # Printing is not an error: the output goes to the handler's log and the task is done.
    ("chatter", {"megabytes": 8}, {}, "done", None),
]


def test_misbehaving_tasks_fail_alone(conn, processes, report):
    ids = [enqueue(conn, type_name, args, **options) for type_name, args, options, _, _ in CASES]
    last = enqueue(conn, "add", {"x": 20, "y": 22})
    handler = processes.start("handler.py")
    rows = [wait_for(lambda i=i: finished(conn, i), timeout=60) for i in ids]
    for (type_name, _, _, status, message), row in zip(CASES, rows, strict=True):
        assert row["status"] == status, (type_name, row)
        if message:
            assert row["error"]["message"].startswith(message), (type_name, row["error"])
        report(type_name, f"{row['status']}: {row['error']['message'] if row['error'] else row['result']}")
    assert wait_for(lambda: finished(conn, last))["result"] == 42
    assert handler.poll() is None
    assert processes.output(handler).count("x" * 1023) == 8 * 1024
