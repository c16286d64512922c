"""Every code block of README.md is checked against the code it describes.

* ``python`` blocks run, as written, in a subprocess with ``DATABASE_URL`` and
  ``REDIS_URL`` pointing at the test session's servers.
* Shell blocks (``bash``, ``cron``): every command line is checked.  ``sessionbench ...``
  lines must parse with the real command-line parser (an option that does not exist, a
  bad choice or a missing argument fails here), ``make X`` must be a Makefile target,
  files a command names (``locust -f``, ``--thresholds``) must exist, and a few quick
  ones run for real (:data:`RUN`).  Any other command must be one of :data:`EXTERNAL`,
  tools of the reader's own (curl, docker) that are named but not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sessionbench.bench.cli import build_parser
from sessionbench.bench.servers import Servers

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)
#: Commands named in the README that are the reader's own tools, not this project's.
EXTERNAL = {"curl", "docker"}
#: sessionbench command lines that run for real here (quick, no files of the reader's needed).
RUN = {"sessionbench trace synth -o trace.tsv --duration 86400 --new-sessions-per-s 0.5"}


def _commands(block: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comments and cron times removed."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        line = re.sub(r"^(\S+\s+){5}(?=\S*=|/)", "", line) if re.match(r"^\d+\s+\d+\s+\*", line) else line
        if line:
            out.append(line)
    return out


def _without_env(words: list[str]) -> list[str]:
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words = words[1:]
    return words


SHELL_LINES = [line for lang, body in BLOCKS if lang in ("bash", "sh", "cron") for line in _commands(body)]
PYTHON_BLOCKS = [body for lang, body in BLOCKS if lang == "python"]


def test_the_readme_has_blocks_to_check() -> None:
    """The parser found the README's blocks (a broken pattern would make every other test vacuous)."""
    assert len(SHELL_LINES) >= 20
    assert PYTHON_BLOCKS


@pytest.mark.parametrize("line", SHELL_LINES)
def test_every_shell_line_names_something_that_exists(line: str, tmp_path: Path) -> None:
    """A README command parses with the real CLI, names a real make target or file, or is a known outside tool."""
    words = _without_env(shlex.split(line.split(">>")[0]))
    program = Path(words[0]).name
    if program == "sessionbench":
        args = [w.replace("$DATABASE_URL", "postgresql://u@127.0.0.1/db") for w in words[1:]]
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"README: {line!r} does not parse (exit {exc.code})")
    elif program == "make":
        targets = re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M)
        named = [w for w in words[1:] if "=" not in w]
        assert named, line
        assert set(named) <= set(targets), f"README: {line!r} names a target the Makefile does not have"
    elif program == "locust":
        for flag in ("-f", "--thresholds"):
            if flag in words:
                assert (ROOT / words[words.index(flag) + 1]).exists(), f"README: {line!r} names a missing file"
    else:
        assert program in EXTERNAL, f"README: {line!r} runs {program!r}, which this test does not know"


def test_the_quick_commands_run(servers: Servers, tmp_path: Path) -> None:
    """The README's quick sessionbench commands run for real and exit 0."""
    assert set(RUN) <= {" ".join(_without_env(shlex.split(line))) for line in SHELL_LINES}, "RUN is out of date"
    for line in sorted(RUN):
        words = shlex.split(line)
        done = subprocess.run([sys.executable, "-m", "sessionbench.bench.cli", *words[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, f"{line}: {done.stderr}"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.split("\n", 1)[0][:40])
def test_every_python_block_runs_as_written(block: str, servers: Servers, tmp_path: Path) -> None:
    """A README Python block runs unchanged against the test session's servers."""
    env = {**os.environ, "DATABASE_URL": servers.database_url, "REDIS_URL": servers.redis_url}
    script = tmp_path / "readme_block.py"
    script.write_text(block, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    print(done.stdout)


#: Documents of the team's own that users do not have: the project cites its own docs instead.
TEAM_NOTES = re.compile(r"\bDESIGN\.md\b|\bSTYLE\.md\b|\bSTYLE §|\.\./shared\b")
SOURCES = ("sessionbench", "store", "loadtests", "dashboards", "tests", "docs")


def test_no_file_points_at_notes_users_do_not_have() -> None:
    """No shipped file, test or doc cites DESIGN.md, STYLE or ../shared (not in the repository)."""
    files = [ROOT / name for name in ("README.md", "ARCHITECTURE.md", "CHANGELOG.md", "pyproject.toml", "Makefile")]
    for folder in SOURCES:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".yml", ".yaml", ".lua", ".toml"}]
    offenders = []
    for path in files:
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if TEAM_NOTES.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert offenders == []
