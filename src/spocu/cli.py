"""The ``spocu`` command line: ``spocu <command> [options]`` (also ``python -m spocu``).

Each command lives in its own module under :mod:`spocu.commands` and provides
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules
are imported only when their command runs, so ``spocu fit`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from spocu import __version__

#: command name -> (module under spocu.commands, one-line help), in ``--help`` order
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "train a tiny network with SPOCU and ReLU and print the losses"),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spocu", description="SPOCU activation: experiments and tools.")
    parser.add_argument("--version", action="version", version=f"spocu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_line) in COMMANDS.items():
        sub.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser.parse_args(argv or ["--help"])
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose one of {', '.join(COMMANDS)}")
    module = importlib.import_module(f"spocu.commands.{COMMANDS[name][0]}")
    sub = argparse.ArgumentParser(prog=f"spocu {name}", description=getattr(module, "HELP", None))
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
