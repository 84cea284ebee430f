"""The decoding options: one definition, shown by every captioning command, handed over whole."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.testing import CliRunner

from video_mm.cli import app
from video_mm.cli._decoding import DecodingOptions, decoding, decoding_options, with_decoding
from video_mm.settings import Settings

DECODING = {"--beam-size", "--max-len", "--length-penalty", "--no-repeat-ngram",
            "--no-repeat-adjacent", "--repetition-penalty"}  # fmt: skip


def _options(*path: str) -> set[str]:
    command = typer.main.get_command(app)
    ctx = typer.Context(command)
    for name in path:
        command = command.get_command(ctx, name)  # type: ignore[attr-defined]
    return {o for p in command.params for o in p.opts if o.startswith("--")}


def test_every_captioning_command_shows_the_same_options() -> None:
    assert DECODING | {"--n-best"} <= _options("caption")
    for path in (("eval", "captioner"), ("explain",)):
        assert _options(*path) >= DECODING and "--n-best" not in _options(*path)


def test_the_command_gets_what_was_given_as_one_object() -> None:
    demo = typer.Typer()
    seen: list[tuple[str, DecodingOptions, bool]] = []

    @demo.command()
    @decoding_options()
    def one(name: Annotated[str, typer.Argument()], options: DecodingOptions = DecodingOptions(),
            flag: Annotated[bool, typer.Option("--flag")] = False) -> None:
        seen.append((name, options, flag))

    @demo.command()
    @decoding_options(n_best=True)
    def best(options: DecodingOptions = DecodingOptions()) -> None:
        seen.append(("", options, False))

    runner = CliRunner()
    assert runner.invoke(demo, ["one", "clip", "--beam-size", "3", "--allow-repeat-adjacent",
                                "--flag"]).exit_code == 0
    assert runner.invoke(demo, ["best", "--n-best", "2"]).exit_code == 0
    assert runner.invoke(demo, ["one", "clip", "--n-best", "2"]).exit_code == 2  # not offered
    assert runner.invoke(demo, ["best", "--beam-size", "0"]).exit_code == 2  # its range holds
    (name, given, flag), (_, best_of, _) = seen
    assert (name, flag) == ("clip", True)
    # Without --n-best a command decodes one caption a clip, whatever models.n_best says.
    assert given.given() == {"beam_size": 3, "no_repeat_adjacent": False, "n_best": 1}
    assert best_of.given() == {"n_best": 2}
    settings = Settings(models={"n_best": 4, "beam_size": 5})
    assert decoding(settings, given).n_best == 1 and decoding(settings, given).beam_size == 3
    assert with_decoding(settings, DecodingOptions(max_len=7)).models.max_caption_len == 7
