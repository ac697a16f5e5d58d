"""The ``spocu`` command line: ``spocu <command> [options]`` (also ``python -m spocu``).

Each command is a module in :mod:`spocu.commands` that provides ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``; the CLI finds them
there. A command reports a problem the user can fix by raising
:class:`spocu.errors.CommandError`: one line on stderr, exit status 2. Command modules import their heavy dependencies inside ``run`` so that
``spocu --help`` and ``spocu fit`` never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from spocu import __version__
from spocu.errors import EXIT_USAGE, CommandError

#: commands listed first in ``--help``, in this order; any others follow alphabetically
PREFERRED_ORDER = ("compare", "fit", "analyze", "shape", "bench", "demo")


def available_commands() -> list[str]:
    """The subcommands: the public modules of :mod:`spocu.commands`, in the help's order."""
    import spocu.commands

    names = [m.name for m in pkgutil.iter_modules(spocu.commands.__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (PREFERRED_ORDER.index(n) if n in PREFERRED_ORDER else len(PREFERRED_ORDER), n))


def _load(name: str):
    return importlib.import_module(f"spocu.commands.{name}")


def _build_parser(commands: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spocu", description="SPOCU activation: experiments and tools.")
    parser.add_argument("--version", action="version", version=f"spocu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands:
        sub.add_parser(name, help=getattr(_load(name), "HELP", ""), add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``spocu`` entry point: run the subcommand named by ``argv[0]`` (default: ``sys.argv``)
    and return its exit status: a :class:`~spocu.errors.CommandError` prints one line and returns 2,
    Ctrl-C returns 130.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = available_commands()
    if not argv or argv[0] in ("-h", "--help", "--version"):
        _build_parser(commands).parse_args(argv or ["--help"])
        return 0
    name = argv[0]
    if name not in commands:
        _build_parser(commands).error(f"unknown command {name!r}; choose one of {', '.join(commands)}")
    module = _load(name)
    sub = argparse.ArgumentParser(prog=f"spocu {name}", description=getattr(module, "HELP", None))
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except CommandError as error:
        print(f"spocu {name}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
