"""The rooms stay apart (DESIGN.md section 3): the API starts without torch, `model/` imports
nothing of ours, and only `app/cli` reaches into `worker/` or `model/`."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def imported_modules(path) -> set[str]:
    """Top-level names this file imports at import time (function bodies left out: lazy)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in tree.body:  # module level only; `if TYPE_CHECKING:` blocks are not run
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources(package: str, *, exclude: str | None = None):
    for path in sorted((ROOT / package).rglob("*.py")):
        if exclude is None or exclude not in path.relative_to(ROOT).parts:
            yield path


@pytest.mark.parametrize(
    ("package", "forbidden", "exclude"),
    [
        ("model", ("app", "worker"), None),
        ("app", ("torch", "model", "worker", "diffusers", "open_clip"), "cli"),
    ],
)
def test_no_module_imports_across_the_rule(package, forbidden, exclude) -> None:
    broken = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources(package, exclude=exclude)
        for name in imported_modules(path)
        if name.split(".")[0] in forbidden
    ]
    assert not broken, "\n".join(broken)


def test_the_api_process_starts_without_torch() -> None:
    heavy = ("torch", "diffusers", "open_clip", "model", "worker")
    code = f"import sys, app.main, app.cli; print(sorted(set({heavy}) & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"the API process imported {run.stdout.strip()}"
