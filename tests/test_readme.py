import subprocess
import sys

from tests.support import REPO


def test_the_readme_settings_table_matches_the_code() -> None:
    done = subprocess.run([sys.executable, "scripts/readme.py", "--check"], cwd=REPO, check=False)
    assert done.returncode == 0, "README.md is out of date: run `make docs`"


def test_the_readme_shows_the_two_commands_first() -> None:
    text = (REPO / "README.md").read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block
