"""The caption decoding options every captioning command shares (``vmm caption``, ``vmm eval
captioner``, ``vmm explain``): each overrides its ``[models]`` setting for this run only."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from video_mm.settings import Settings

BeamSize = Annotated[int | None, typer.Option(
    min=1, help="Beam width, 1: greedy (default: models.beam_size).")]
MaxLen = Annotated[int | None, typer.Option(
    "--max-len", min=1, help="Words per caption at most (default: models.max_caption_len).")]
LengthPenalty = Annotated[float | None, typer.Option(
    min=0.0, help="GNMT length penalty alpha (default: models.length_penalty).")]
NoRepeatNgram = Annotated[int | None, typer.Option(
    min=0, help="No n-gram of words twice in a caption, 0: allowed (default: "
    "models.no_repeat_ngram).")]
NoRepeatAdjacent = Annotated[bool | None, typer.Option(
    "--no-repeat-adjacent/--allow-repeat-adjacent",
    help="Never the same word twice in a row (default: models.no_repeat_adjacent).")]
RepetitionPenalty = Annotated[float | None, typer.Option(
    min=1.0, help="Each earlier use of a word makes it r times less likely, 1: off (default: "
    "models.repetition_penalty).")]
NBest = Annotated[int | None, typer.Option(
    "--n-best", min=1, help="Captions per clip, best first, at most the beam width (default: "
    "models.n_best).")]


def _given(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def decoding(settings: Settings, **options: Any) -> Any:
    """The configured :class:`~video_mm.models.decoding.Decoding` with the given options."""
    from video_mm.models.decoding import Decoding

    return Decoding.from_settings(settings.models, **_given(**options))


def with_decoding(settings: Settings, **options: Any) -> Settings:
    """``settings`` with the given decoding options written into ``[models]`` (the pipeline reads
    its decoding from there)."""
    given = _given(**options)
    if "max_len" in given:
        given["max_caption_len"] = given.pop("max_len")
    chosen = decoding(settings, **options)  # refuse a bad combination here, not in the job
    given["beam_size"] = chosen.beam_size  # --n-best alone widens the beam to hold them
    models = settings.models.model_copy(update=given)
    return settings.model_copy(update={"models": models})
