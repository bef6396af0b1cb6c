"""The ``opsloop`` command. Each noun lives in its own module, which adds its sub-commands via ``register``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules under ``cluster.cli`` that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "up", "approvals", "users", "audit", "status", "config", "knowledge", "twin", "sim", "barrier", "llm", "incident",
    "deploy",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; every sub-command module registers itself here."""
    parser = argparse.ArgumentParser(
        prog="opsloop",
        description="Closed-loop AI operations for GPU data centers: a digital twin, an LLM agent and "
        "human approval, as Ray actors. Start with `opsloop up`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"cluster.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"cluster.cli.{name}":
                continue  # a room not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"opsloop: error: {exc}", file=sys.stderr)
        return exc.code


class CliError(Exception):
    """A failure the user can act on: printed as one line, no traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
