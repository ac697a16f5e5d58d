"""The command-line front end."""

import subprocess
import sys

import pytest

from spocu import cli


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in cli.available_commands():
        assert name in out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["no-such-command"])
    assert info.value.code == 2
    assert "unknown command" in capsys.readouterr().err


def test_every_command_module_has_the_interface():
    for name in cli.available_commands():
        module = cli._load(name)
        assert isinstance(module.HELP, str) and module.HELP
        assert callable(module.add_arguments) and callable(module.run)


def test_help_does_not_import_torch():
    code = "import sys; from spocu import cli\ntry:\n cli.main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_demo_trains(capsys):
    assert cli.main(["demo", "--steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "spocu" in out and "relu" in out
