"""``--config FILE.toml``: a command's options from a TOML file, as timm's ``--config`` reads YAML.

The file holds one key per option, named as the option (``batch-size`` or ``batch_size``), with
the value the option takes: a string, a number, a boolean for a flag, an array for an option that
takes several values (``activations = ["spocu", "relu"]``, ``hidden = [64, 64]``). The values pass
through the same checks as on the command line, and options given on the command line win.

:func:`options_toml` writes a parsed command line back in that form, so ``spocu compare`` records
the options an experiment was started with in ``OUT/config.toml`` and
``spocu compare --config OUT/config.toml`` starts it again.

Example:
    >>> import argparse, pathlib, tempfile
    >>> parser = argparse.ArgumentParser(prog="demo")
    >>> _ = parser.add_argument("--epochs", type=int)
    >>> _ = parser.add_argument("--names", nargs="+")
    >>> add_config_option(parser)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.toml"
    >>> _ = path.write_text('epochs = 3\\nnames = ["a", "b"]\\n')
    >>> args = parser.parse_args(["--config", str(path), "--epochs", "5"])
    >>> args.epochs, args.names
    (5, ['a', 'b'])
    >>> print(options_toml(parser, args), end="")
    epochs = 5
    names = [
        "a",
        "b",
    ]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["add_config_option", "options_toml"]

#: options that say how this invocation behaves, not what the experiment is: never read or recorded
_NOT_RECORDED = frozenset({"config", "help"})


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        action.dest: action for action in parser._actions if action.option_strings
    }  # argparse's documented attribute since 3.2


def _tokens(key: str, value: Any, action: argparse.Action) -> list[str]:
    """``key = value`` as the command-line words that give it."""
    option = max(action.option_strings, key=len)

    def word(item: Any) -> str:
        if isinstance(item, bool) or isinstance(item, (dict, list)) or item is None:
            raise ValueError(f"{key} = {item!r}: expected a string or a number")
        return str(item)

    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise ValueError(f"{key} = {value!r}: {option} is a flag; write true or false")
        return [option] if value else []
    if isinstance(value, list):
        if action.nargs is None:  # one word: comma-separated values (--hidden 64,64)
            return [option, ",".join(word(v) for v in value)]
        return [option, *(word(v) for v in value)]
    return [option, word(value)]


def _read(parser: argparse.ArgumentParser, path: str) -> list[str]:
    try:
        with open(path, "rb") as stream:
            table = tomllib.load(stream)
    except OSError as error:
        parser.error(f"--config {path}: cannot read it: {error.strerror or error}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        parser.error(f"--config {path}: not a TOML file: {error}")
    actions = _actions(parser)
    tokens: list[str] = []
    for key, value in table.items():
        dest = key.replace("-", "_")
        if dest in _NOT_RECORDED or dest not in actions:
            known = ", ".join(sorted(d.replace("_", "-") for d in actions if d not in _NOT_RECORDED))
            parser.error(f"--config {path}: {key!r} is not an option of this command; the options are {known}")
        try:
            tokens += _tokens(key, value, actions[dest])
        except ValueError as error:
            parser.error(f"--config {path}: {error}")
    return tokens


class _ConfigFile(argparse.Action):
    """Reads the file when ``--config`` is met; options given on the command line keep their values."""

    def __call__(self, parser, namespace, path, option_string=None):
        from_file = parser.parse_args(_read(parser, path))  # the same types and choices as the command line
        for dest in vars(from_file):
            if dest in _NOT_RECORDED:
                continue
            default = parser.get_default(dest)
            if getattr(from_file, dest) != default and getattr(namespace, dest, default) == default:
                setattr(namespace, dest, getattr(from_file, dest))
        setattr(namespace, self.dest, path)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE.toml`` to ``parser`` (options on the command line override the file's)."""
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        action=_ConfigFile,
        help='read options from a TOML file (one key per option, e.g. epochs = 10, activations = ["spocu", "relu"]); '
        "options on the command line win. OUT/config.toml of an earlier run starts it again",
    )


def _toml_value(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_toml_value(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def options_toml(
    parser: argparse.ArgumentParser, args: argparse.Namespace, leave_out: frozenset[str] = frozenset()
) -> str:
    """The options of ``args`` that differ from their defaults, as a TOML document ``--config`` reads back."""
    import tomli_w

    table = {}
    for dest, action in _actions(parser).items():
        if dest in _NOT_RECORDED or dest in leave_out:
            continue
        value = getattr(args, dest, None)
        if value is None or value == action.default:
            continue
        table[dest.replace("_", "-")] = _toml_value(value)
    return tomli_w.dumps(table)
