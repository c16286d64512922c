"""One import name: the code lives under ``sessionbench/``; ``store/`` and ``loadtests/`` are a checkout's shortcuts.

The wheel's contents are checked in ``tests/test_packaging.py``; this checks the source
tree: nothing imports the shortcut names (they are not installed), and the shortcuts do
what the README says.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.sources import parse_file

ROOT = Path(__file__).resolve().parents[1]
SHORTCUT_NAMES = ("store", "bench", "loadtests")


def _imported_top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(parse_file(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_a_name_the_distribution_does_not_install() -> None:
    """Every import of the project's code goes through ``sessionbench.``: ``store``/``bench`` exist only in a clone."""
    offending = []
    for folder in ("sessionbench", "tests", "dashboards"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue
            found = _imported_top_level_names(path) & set(SHORTCUT_NAMES)
            if found:
                offending.append(f"{path.relative_to(ROOT)}: {sorted(found)}")
    assert not offending, offending


def test_the_store_shortcut_re_exports_the_same_objects() -> None:
    """``from store import open_store`` in a clone gives ``sessionbench.store``'s own objects, all of them."""
    import sessionbench.store as real
    import store  # the checkout's shortcut (the rootdir is on sys.path)

    assert Path(store.__file__).resolve() == ROOT / "store" / "__init__.py"
    assert store.__all__ == real.__all__
    assert all(getattr(store, name) is getattr(real, name) for name in real.__all__)


def test_the_locustfile_shortcut_runs_the_packaged_one() -> None:
    """``locust -f loadtests/locustfile.py`` loads the packaged file: its user, and its own options parse."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtests/locustfile.py",
            "--list",
            "--think-scale",
            "2",
            "--shape",
            "steps",
            "--summary-file",
            "unused.json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ChatUser" in done.stdout + done.stderr
