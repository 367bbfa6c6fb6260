"""Static checks that run with the suite: mypy over the package, configured in
pyproject.toml ([tool.mypy])."""

import subprocess
import sys

from conftest import ROOT


def test_mypy_finds_no_error_in_the_package():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "hurricane"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, f"mypy found errors:\n{output}"
