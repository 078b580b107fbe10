"""The README documents every setting, so the reference cannot fall behind the code."""

from __future__ import annotations

import re
from pathlib import Path

from productos.settings import env_names

DOC = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_has_a_row_in_the_reference() -> None:
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)`", DOC.read_text(encoding="utf-8"), flags=re.M))
    missing = sorted(set(env_names()) - rows)
    assert not missing, f"add these settings to the reference tables of {DOC.name}: {missing}"
