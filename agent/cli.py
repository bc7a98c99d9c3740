"""The `dock-agent` command line (SPEC 3): one module per command under agent/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from agent import __version__
from agent.schema import ConfigError

COMMANDS = (
    "run",
    "status",
    "clips",
    "notes",
    "verify",
    "export",
    "hold",
    "assign",
    "receive",
    "demo",
)


def command_modules() -> dict[str, ModuleType]:
    """The command modules present, by command name."""
    modules = {}
    for name in COMMANDS:
        try:
            modules[name] = importlib.import_module(f"agent.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"agent.commands.{name}":
                raise
    return modules


def build_parser(modules: dict[str, ModuleType]) -> argparse.ArgumentParser:
    """The argument parser with every command's sub-parser."""
    parser = argparse.ArgumentParser(prog="dock-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dock-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in modules.values():
        module.add_parser(sub)
    return parser


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    """`-c CONFIG` as every command takes it (default $DOCK_AGENT_CONFIG, then /etc)."""
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        default=None,
        help="configuration file (default: $DOCK_AGENT_CONFIG, "
        "else /etc/dock-agent/dock-agent.toml)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    modules = command_modules()
    args = build_parser(modules).parse_args(argv)
    try:
        return int(modules[args.command].run(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"dock-agent: config: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dock-agent clips | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
