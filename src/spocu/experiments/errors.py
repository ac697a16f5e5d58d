"""The problems an experiment reports to its user (``spocu compare`` prints each as one line, exit 2).

Every error here is something the user can fix -- a bad option, a directory that is not ours, a
damaged run file -- and its message says what is wrong and, where there is one, what to do.

    >>> issubclass(ConfigMismatch, ExperimentError) and issubclass(BadRunFile, ExperimentError)
    True
"""

from __future__ import annotations

__all__ = ["ExperimentError", "OptionError", "ConfigMismatch", "OutputBusy", "OutputRefused", "BadRunFile"]


class ExperimentError(Exception):
    """A problem with the user's request, data or files; the message is meant for the user."""


class OptionError(ExperimentError, ValueError):
    """An option (or combination of options) is out of its range or does not apply."""


class ConfigMismatch(ExperimentError, ValueError):
    """The output directory holds runs of a different protocol, or a config.json that is not ours."""


class OutputBusy(ExperimentError, RuntimeError):
    """Another ``spocu compare`` is writing to the same output directory."""


class OutputRefused(ExperimentError, ValueError):
    """``--out`` is not a directory spocu may write to (a user's files, a file, a device, unwritable)."""


class BadRunFile(ExperimentError, ValueError):
    """A run file (``runs/<activation>-seed<k>.json``) is damaged or does not belong to this experiment."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason
