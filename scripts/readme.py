"""Rewrite the generated settings table of docs/settings.md (`make docs`); the tests check it is
current."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from leaderboard.config import settings_table

README = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
BLOCK = re.compile(r"(<!-- settings:begin -->\n).*?(<!-- settings:end -->)", re.S)


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + settings_table() + "\n" + m.group(2), text)


if __name__ == "__main__":
    current = README.read_text()
    updated = render(current)
    if "--check" in sys.argv:
        sys.exit(0 if updated == current else 1)
    README.write_text(updated)
