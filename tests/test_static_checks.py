"""Static checks that run with the suite: mypy over the package, configured in
pyproject.toml ([tool.mypy]); the import contracts of .importlinter (imports point
one way, no circles between the parts of a package); and no import circle at all,
function-level imports included."""

import shutil
import subprocess
import sys

import grimp

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


def test_the_import_contracts_are_kept():
    lint_imports = shutil.which("lint-imports")
    assert lint_imports, "lint-imports (import-linter) is not installed: pip install -e .[test]"
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=170
    )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, f"an import contract is broken:\n{output}"
    assert "0 broken" in output


def test_no_module_imports_one_that_imports_it_back():
    """Not even through an import inside a function: a circle that a lazy import
    breaks at run time is still two modules that cannot be read apart. A package
    importing its own modules counts; a module importing its package does not need
    to (Python loads the package first)."""
    # Imports for type annotations only (under TYPE_CHECKING) are not run: left out.
    graph = grimp.build_graph("hurricane", cache_dir=None, exclude_type_checking_imports=True)
    circles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                circles.append(" -> ".join((importer, *back)))
    assert circles == [], "\n".join(circles)
