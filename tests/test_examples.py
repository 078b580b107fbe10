"""The examples run, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_use_as_library(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "use_as_library.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "service layer: 1 product(s); Lámpara has stock 4, v2" in result.stdout
    assert "http: POST 201, GET /productos 200, next: {'next': {'url': '/productos?after=1&limit=1'" in result.stdout
    assert "http: /health 200 healthy" in result.stdout
