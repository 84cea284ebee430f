"""Every command with ``--json`` prints only JSON on stdout (progress, epochs and notes go to
stderr), and a test parses all of its stdout: this list names it, so a new ``--json`` command
cannot come without one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from video_mm.cli import app

TESTS = Path(__file__).resolve().parents[1]
# command -> the test that runs it with --json and parses its whole stdout (json.loads(*.stdout))
PARSED_BY = {
    "synth": "data/test_synth.py",
    "train captioner": "train/test_captioning.py",
    "eval captioner": "train/test_captioning.py",
    "explain": "train/test_explain.py",
    "train retrieval": "retrieval/test_cli.py",
    "eval retrieval": "retrieval/test_cli.py",
    "train reranker": "rerank/test_cli.py",
    "features": "features/test_cli.py",
    "probe": "cli/test_io_cli.py",
    "models list": "cli/test_models.py",
    "models pull": "cli/test_models.py",
    "models zero-shot": "cli/test_models.py",
    "models freeze": "cli/test_models.py",
    "models adapt-bn": "train/test_batchnorm.py",
    "index": "pipeline/test_cli_service.py",
    "status": "pipeline/test_cli_service.py",
    "search": "search/test_search.py",
    "delete": "search/test_search.py",
}


def _json_commands(group: Any, prefix: str = "") -> set[str]:
    found: set[str] = set()
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        path = f"{prefix}{name}"
        if hasattr(command, "list_commands"):  # a group: train, eval, models
            found |= _json_commands(command, f"{path} ")
        elif command is not None and any("--json" in p.opts for p in command.params):
            found.add(path)
    return found


def test_every_json_command_has_a_test_that_parses_its_stdout() -> None:
    assert _json_commands(typer.main.get_command(app)) == set(PARSED_BY)
    for command, test in PARSED_BY.items():
        text = (TESTS / test).read_text()
        words = command.split()
        assert "--json" in text and "stdout" in text, test
        assert all(f'"{w}"' in text for w in words), (command, test)
