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
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "productos")
def test_help_renders(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: productos" in capsys.readouterr().out
