"""A bad catalog stops the API at start-up with one line naming the file, the line and what
is wrong (never at the first completion)."""

from __future__ import annotations

import pytest

from leaderboard.catalog import CatalogError, default_catalog_text, parse_catalog

GOOD = "actions:\n  - id: a\n    title: A\n    points: 1\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "    colour: red\n", r"^c\.yaml:2: actions/0: Additional properties"),
        (GOOD + "  - id: b\n    title: B\n    points: 0\n", r"^c\.yaml:7: actions/1/points: "),
        (GOOD + "  - id: Bad Id\n    title: B\n    points: 1\n", r"^c\.yaml:5: actions/1/id: "),
        (GOOD + GOOD.removeprefix("actions:\n"), r"^c\.yaml: action 'a' is defined twice"),
        ("actions: [\n", r"^c\.yaml: not valid YAML"),
        ("actions: []\n", r"^c\.yaml:1: actions: \[\] should be non-empty"),
    ],
)
def test_a_bad_catalog_names_its_line(text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog(text, "c.yaml")


def test_the_default_catalog_parses() -> None:
    catalog = parse_catalog(default_catalog_text())
    assert catalog.get("daily-practice") is not None
    assert catalog.actions["daily-practice"].repeat == "daily"
