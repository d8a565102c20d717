"""A description of the machine and the code measured, for the report."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime
from pathlib import Path

from bench.procs import PROJECT_DIR


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".", ":!bench", ":!docs/BENCHMARKS.md", ":!docs/drain.png")
    except OSError:
        return "unknown (no git)"
    return f"{commit}{' with uncommitted changes' if dirty else ''}" if commit else "unknown"


def describe(postgres: str) -> list[str]:
    return [
        f"CPUs (nproc): {len(os.sched_getaffinity(0))} ({_cpu_model()})",
        f"memory: {_memory_gib():.1f} GiB",
        f"load average when the bench started (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"database: {postgres}",
        f"Python: {platform.python_version()}",
        f"date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"flask-tasks: commit {_commit()}",
    ]
