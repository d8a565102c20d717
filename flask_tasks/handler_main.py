"""The handler process's entry point (`python handler.py`): its command line, then a Handler."""

from __future__ import annotations

import argparse
import dataclasses

from flask_tasks.config import ConfigError, comma_list, exit_with
from flask_tasks.handler import Handler
from flask_tasks.startup import start_process


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="handler.py",
        description="A handler: claims due tasks, runs them and stores their outcome. "
        "Settings come from the environment and .env.",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--tasks", metavar="TYPES", help="claim only these task types, comma-separated (instead of HANDLER_TASKS)"
    )
    choice.add_argument(
        "--exclude-tasks",
        metavar="TYPES",
        help="claim every task type but these, comma-separated (instead of HANDLER_EXCLUDE_TASKS)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # first, so that --help needs no settings
    settings, registry = start_process()
    try:
        if args.tasks is not None or args.exclude_tasks is not None:
            # A flag replaces both variables: with HANDLER_EXCLUDE_TASKS=mov3d in a .env that
            # all handlers share, `python handler.py --tasks mov3d` still runs mov3d.
            flag, given = ("--tasks", args.tasks) if args.tasks is not None else ("--exclude-tasks", args.exclude_tasks)
            if not comma_list(given):
                raise ConfigError(f"{flag} {given!r} names no task type")
            settings = dataclasses.replace(
                settings,
                handler_tasks=comma_list(args.tasks or ""),
                handler_exclude_tasks=comma_list(args.exclude_tasks or ""),
            )
        handler = Handler(settings, registry)
    except ConfigError as err:
        exit_with(err)
    return handler.run()
