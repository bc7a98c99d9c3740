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

DESCRIPTION = """\
dock-agent runs a docking station for body-worn recorders: it copies every clip off a
docked recorder, proves each copy by its SHA-256, keeps a hash-chained custody log, and
sends the evidence to the central server over MQTT. `run` is the daemon (systemd starts
it); the other commands read or act on the same data while it runs.

Every command reads its configuration from -c CONFIG, else $DOCK_AGENT_CONFIG, else
/etc/dock-agent/dock-agent.toml (demo makes its own). Exit codes: 0 success, 1 failure
at run time, 2 bad usage or bad configuration.

Try it without hardware: dock-agent demo (needs mosquitto and ffmpeg installed)."""

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
    "keys",
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
    parser = argparse.ArgumentParser(
        prog="dock-agent",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dock-agent {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands (COMMAND --help for each)"
    )
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


def runtime_error(exc: OSError) -> str:
    """One line naming the path and the cause: `/var/lib/dock-agent/index: Permission denied`."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    cause = exc.strerror or str(exc)
    return f"{where}: {cause}" if where else cause


def _runtime_errors() -> tuple[type[Exception], ...]:
    """Damaged files the commands name in one line (never a traceback)."""
    from agent.evidence.custody import CustodyError
    from agent.evidence.index import IndexCorrupt
    from agent.notes.store import NotesCorrupt

    return (CustodyError, IndexCorrupt, NotesCorrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    modules = command_modules()
    try:
        args = build_parser(modules).parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, argparse printed why)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(modules[args.command].run(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"dock-agent: config: {problem}", file=sys.stderr)
        return 2
    except OSError as exc:  # a directory without permission, a missing mount, a full disk
        print(f"dock-agent {args.command}: {runtime_error(exc)}", file=sys.stderr)
        return 1
    except _runtime_errors() as exc:
        print(f"dock-agent {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dock-agent clips | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
