"""The README's two commands are the ones CI and users run: keep them in sync with .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[str]:
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def test_readme_has_exactly_two_quick_start_commands():
    quick = ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1]
    quick = quick.split("\n## ", 1)[0]
    commands = [c for b in _bash_blocks(quick) for c in _commands(b)]
    assert len(commands) == 2, commands
    assert commands[0].startswith("pip install torch==2.13.0")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    quick = ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1]
    test_command = [c for b in _bash_blocks(quick) for c in _commands(b)][1]
    ci = ROOT.joinpath(".ci", "run").read_text().splitlines()
    assert test_command in [ln.strip() for ln in ci], (
        f".ci/run must run the README's test command verbatim: {test_command!r}"
    )
