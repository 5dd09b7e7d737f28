import re
import subprocess
import sys

from tests.support import REPO


def test_the_settings_table_matches_the_code() -> None:
    done = subprocess.run([sys.executable, "scripts/readme.py", "--check"], cwd=REPO, check=False)
    assert done.returncode == 0, "docs/settings.md is out of date: run `make docs`"


def test_the_readme_shows_the_two_commands_first() -> None:
    text = (REPO / "README.md").read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block


def test_every_relative_link_in_the_docs_points_at_a_file_that_exists() -> None:
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
