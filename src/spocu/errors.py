"""The errors the ``spocu`` command reports to its user.

A command raises :class:`CommandError` for anything the user can fix (bad option, bad file,
unwritable output); :func:`spocu.cli.main` prints it as one line,
``spocu <command>: error: <message>``, on stderr and exits with status 2, as argparse does
for bad options. Any other exception escaping a command is a bug.

    >>> str(CommandError("--lr must be a finite number > 0, got inf"))
    '--lr must be a finite number > 0, got inf'
"""

from __future__ import annotations

__all__ = ["CommandError", "EXIT_USAGE"]

#: exit status of a command that refused its input (argparse uses the same)
EXIT_USAGE = 2


class CommandError(Exception):
    """A problem with the user's request or files, reported as one line and exit status 2."""
