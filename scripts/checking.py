"""What the repository's check scripts share (check_manifests.py, check_workflows.py):
running a linter, installing one into .cache/ once while saying so, and the report
of one line per check with its problems under it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tool_problems(argv: list[str], timeout: float) -> list[str]:
    """Run a linter from the repository's root: nothing when it passes, else the lines
    it printed (its stderr, or its exit status, when it printed nothing)."""
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    if result.returncode == 0:
        return []
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return lines or [result.stderr.strip() or f"exit status {result.returncode}"]


def install_once(script: str, what: str, where: Path, steps: list[list[str]]) -> None:
    """Run the ``steps`` that install ``what`` into ``where``, saying so before and
    after on stderr: the first run of a check downloads a tool for minutes."""
    print(
        f"{script}: installing {what} into {where.relative_to(REPO)} (once)...",
        file=sys.stderr,
        flush=True,
    )
    began = time.monotonic()
    for step in steps:
        subprocess.run(step, check=True, cwd=REPO)
    print(f"{script}: installed in {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)


def report(results: dict[str, list[str]]) -> int:
    """Print ``ok`` or ``FAIL`` and the name of each check, its problems under it;
    the exit status: 1 if any check found a problem."""
    for name, problems in results.items():
        print(f"{'FAIL' if problems else 'ok  '} {name}")
        for problem in problems:
            print(f"     {problem}")
    return 1 if any(results.values()) else 0
