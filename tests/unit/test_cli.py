"""Every ``productos`` command's help renders (argparse formats help lazily: a bad string only fails there)."""

from __future__ import annotations

import pytest

from productos.entrypoints.cli import main

COMMANDS = [
    [],
    ["serve"],
    ["migrate"],
    ["check"],
    ["aws"],
    ["aws", "scaling-policies"],
    ["aws", "alarms"],
    ["aws", "dashboard"],
    ["new"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "productos")
def test_help_renders(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: productos" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from productos import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"productos {__version__}"


def test_help_lists_every_command_in_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("serve", "migrate", "check", "aws", "new"):
        assert f"    {command} " in out
    assert "``" not in out
    assert "exit codes: 0 done, 1 failed" in out


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "eighty"])
    assert exited.value.code == 2
    assert "invalid int value" in capsys.readouterr().err
