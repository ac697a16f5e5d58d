"""Subcommands of the ``spocu`` command line, one module each (see :mod:`spocu.cli`)."""
