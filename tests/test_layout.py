"""The house's layout: the product (`leaderboard`) apart from its tooling (`leaderboard_tools`),
every module of the product inside a wall that import-linter checks, no module too large to
read in one sitting."""

from __future__ import annotations

import tomllib

from tests.support import REPO

PRODUCT = REPO / "leaderboard"
MAX_LINES = 400


def _contract_modules() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    found: set[str] = set()
    for contract in config["contracts"]:
        for key in ("modules", "source_modules", "layers", "containers"):
            for entry in contract.get(key, []):
                found.update(part.strip() for part in entry.split("|"))
    return found


def test_the_product_never_imports_the_tooling_by_contract() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    walls = [
        c for c in config["contracts"]
        if c["type"] == "forbidden" and c["source_modules"] == ["leaderboard"]
    ]  # fmt: skip
    assert walls and walls[0]["forbidden_modules"] == ["leaderboard_tools"]


def test_every_module_of_the_product_is_inside_a_wall() -> None:
    """A new module of the product must say where it stands: in the shared core, a service,
    or the operator's core."""
    named = _contract_modules()
    outside = []
    for path in sorted(PRODUCT.iterdir()):
        if path.name.startswith(("_", ".")) or path.name == "cli.py":
            continue  # the package's face, __main__, and the command that starts a service
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
            module = f"leaderboard.{path.stem}"
            if not any(module == n or module.startswith(f"{n}.") for n in named):
                outside.append(module)
    assert outside == []
    operator = [f"leaderboard.operator.{p.stem}" for p in (PRODUCT / "operator").glob("*.py")]
    assert sorted(set(operator) - named - {"leaderboard.operator.__init__"}) == []


def test_no_module_of_the_product_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in PRODUCT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
