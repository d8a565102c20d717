"""Taskpacks: task types from installed distributions (entry point group flask_tasks.taskpacks),
beside the modules TASKS_MODULE names; where each type came from; a type defined twice.

The example pack is installed for real with pip, into a directory that only the processes under
test get on their PYTHONPATH: the test process and .venv never see it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flask_tasks.config import PROJECT_DIR, ConfigError, load_settings
from tests.conftest import wait_for
from tests.rows import finished, insert_task

EXAMPLE = PROJECT_DIR / "examples" / "flask-tasks-example-pack"
EXAMPLE_SOURCE = {"pack": "flask-tasks-example-pack", "version": "0.1.0", "module": "flask_tasks_example_pack.tasks"}


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the example pack is pip-installed into (once for this file)."""
    base = tmp_path_factory.mktemp("example-pack")
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources.
    source = shutil.copytree(EXAMPLE, base / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = base / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    command += ["--disable-pip-version-check", "--no-index", "--target", str(site), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return site


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return directory


def pack(directory: Path, name: str, version: str, module: str, code: str) -> Path:
    """Declare a distribution without pip: a dist-info folder with METADATA and entry_points.txt."""
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    return write(
        directory,
        {
            f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            f"{dist_info}/entry_points.txt": f"[flask_tasks.taskpacks]\n{name} = {module}\n",
            f"{module}.py": code,
        },
    )


def pythonpath(*directories: Path) -> str:
    return os.pathsep.join(str(d) for d in directories)


EXTRA_MODULE = """
    from flask_tasks import task


    @task
    def shout(text: str) -> str:
        return text.upper() + "!"
"""


def test_a_pack_and_a_second_module_add_task_types_a_handler_runs(conn, processes, example_site, tmp_path):
    extra = write(tmp_path / "extra", {"extra_tasks.py": EXTRA_MODULE})
    handler = processes.start(
        "handler.py", PYTHONPATH=pythonpath(example_site, extra), TASKS_MODULE="tests.sidefx_tasks, extra_tasks"
    )
    ids = {
        "reverse": insert_task(conn, "reverse", {"text": "flask-tasks"}),
        "word_count": insert_task(conn, "word_count", {"text": "one two  three\nfour"}),
        "shout": insert_task(conn, "shout", {"text": "hi"}),
        "add": insert_task(conn, "add", {"x": 1, "y": 2}),
    }
    results = {name: wait_for(lambda i=i: finished(conn, i)) for name, i in ids.items()}
    assert {name: row["status"] for name, row in results.items()} == dict.fromkeys(ids, "done")
    assert results["reverse"]["result"] == "sksat-ksalf"
    assert results["word_count"]["result"] == 4
    assert results["shout"]["result"] == "HI!"
    assert results["add"]["result"] == 3
    ready = processes.output(handler).split("ready for task types ")[1].splitlines()[0].split(", ")
    assert {"reverse", "word_count", "shout", "add"} <= set(ready)


def describe_in_a_process(env: dict[str, str], modules: str) -> dict:
    """Registry.describe() (what GET /tasks answers) after loading as a server process does."""
    code = "import json, sys; from flask_tasks.registry import load_tasks\n"
    code += f"json.dump(load_tasks({modules!r}).describe(), sys.stdout)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_each_type_names_its_source(base_env, example_site, tmp_path):
    extra = write(tmp_path / "extra", {"extra_tasks.py": EXTRA_MODULE})
    env = {**base_env, "PYTHONPATH": pythonpath(PROJECT_DIR, example_site, extra)}
    described = describe_in_a_process(env, "tests.sidefx_tasks,extra_tasks")
    assert described["reverse"]["source"] == EXAMPLE_SOURCE
    assert described["word_count"]["source"] == EXAMPLE_SOURCE
    assert described["word_count"]["description"] == "The number of words in text (runs of whitespace separate them)."
    assert described["word_count"]["args"] == {"text": {"type": "str", "required": True}}
    assert described["shout"]["source"] == {"module": "extra_tasks"}
    # The function's own module: tests.sidefx_tasks takes add from tasks.py with `from tasks import *`.
    assert described["add"]["source"] == {"module": "tasks"}
    assert described["record"]["source"] == {"module": "tests.sidefx_tasks"}


def test_without_the_pack_on_the_path_its_types_are_absent(base_env):
    described = describe_in_a_process({**base_env, "PYTHONPATH": str(PROJECT_DIR)}, "tasks")
    assert "reverse" not in described and "word_count" not in described
    assert "add" in described


def one_task(name: str) -> str:
    """A task module with one task type of this name."""
    return f"from flask_tasks import task\n\n\n@task(name={name!r})\ndef job(x: int) -> int:\n    return x\n"


def stopped_with(processes, **env: str) -> str:
    """Start a handler that must stop at once with exit code 2; its output."""
    proc = processes.start("handler.py", **env)
    assert proc.wait(timeout=30) == 2
    return processes.output(proc)


def test_a_type_in_a_pack_and_a_module_stops_the_handler(processes, example_site, tmp_path):
    clash = write(tmp_path / "clash", {"my_tasks.py": one_task("reverse")})
    output = stopped_with(processes, PYTHONPATH=pythonpath(example_site, clash), TASKS_MODULE="tasks,my_tasks")
    assert (
        "CRITICAL flask_tasks: task type [reverse] is defined twice: by module my_tasks "
        "and by pack flask-tasks-example-pack 0.1.0 (flask_tasks_example_pack.tasks)\n"
    ) in output
    assert output.count("\n") == 1, output


def test_a_type_in_two_packs_stops_the_handler(processes, tmp_path):
    packs = pack(tmp_path / "packs", "pack-a", "1.0", "pack_a_tasks", one_task("shared"))
    pack(packs, "pack-b", "2.5", "pack_b_tasks", one_task("shared"))
    output = stopped_with(processes, PYTHONPATH=str(packs), TASKS_MODULE="tasks")
    assert (
        "task type [shared] is defined twice: by pack pack-a 1.0 (pack_a_tasks) and by pack pack-b 2.5 (pack_b_tasks)"
    ) in output


def test_a_type_in_two_modules_stops_the_handler(processes, tmp_path):
    clash = write(tmp_path / "clash", {"more_tasks.py": one_task("add")})
    output = stopped_with(processes, PYTHONPATH=str(clash), TASKS_MODULE="tasks,more_tasks")
    assert "task type [add] is defined twice: by module tasks and by module more_tasks\n" in output


def test_a_pack_that_cannot_be_imported_stops_the_handler(processes, tmp_path):
    broken = pack(tmp_path / "packs", "pack-c", "3.0", "pack_c_tasks", "import no_such_dependency\n")
    output = stopped_with(processes, PYTHONPATH=str(broken), TASKS_MODULE="tasks")
    expected = "cannot load taskpack pack-c 3.0 (pack_c_tasks): No module named 'no_such_dependency'\n"
    assert f"CRITICAL flask_tasks: {expected}" in output
    assert output.count("\n") == 1, output


def test_a_missing_task_module_stops_the_handler(processes):
    output = stopped_with(processes, TASKS_MODULE="tasks,no_such_tasks")
    assert "CRITICAL flask_tasks: cannot load TASKS_MODULE=no_such_tasks: No module named 'no_such_tasks'\n" in output


# -- the setting --------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("FLASK_TASKS_ENV_FILE", "")
    monkeypatch.setenv("TASKS_MODULE", "")
    return monkeypatch


@pytest.mark.parametrize(
    ("value", "modules"),
    [
        ("", ["tasks"]),
        (" , ", ["tasks"]),
        ("tasks", ["tasks"]),
        (" tasks, my.more_tasks ,", ["tasks", "my.more_tasks"]),
    ],
)
def test_tasks_module_is_a_comma_separated_list(env, value, modules):
    env.setenv("TASKS_MODULE", value)
    settings = load_settings()
    assert settings.tasks_modules == modules
    assert settings.tasks_module == ",".join(modules)


@pytest.mark.parametrize("value", ["my tasks", "tasks,my-tasks", "tasks.", "tasks/more"])
def test_a_tasks_module_that_is_no_module_name_is_a_config_error(env, value):
    env.setenv("TASKS_MODULE", value)
    with pytest.raises(ConfigError, match=r"^TASKS_MODULE=.*: '.*' is not a module name$"):
        load_settings()
