"""The caption decoding options every captioning command shares (``vmm caption``, ``vmm eval
captioner``, ``vmm explain``): each overrides its ``[models]`` setting for this run only.

They are defined once, here: a command takes one parameter annotated :class:`DecodingOptions` and
is decorated with :func:`decoding_options`, which shows Typer the options in that parameter's
place and hands the command what was given as one :class:`DecodingOptions`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from video_mm.settings import Settings

Command = TypeVar("Command", bound=Callable[..., None])


@dataclass(frozen=True)
class DecodingOptions:
    """The decoding options given on the command line (None: the ``[models]`` setting)."""

    beam_size: Annotated[int | None, typer.Option(
        min=1, help="Beam width, 1: greedy (default: models.beam_size).")] = None
    max_len: Annotated[int | None, typer.Option(
        "--max-len", min=1, help="Words per caption at most (default: models.max_caption_len).")
    ] = None
    length_penalty: Annotated[float | None, typer.Option(
        min=0.0, help="GNMT length penalty alpha (default: models.length_penalty).")] = None
    no_repeat_ngram: Annotated[int | None, typer.Option(
        min=0, help="No n-gram of words twice in a caption, 0: allowed (default: "
        "models.no_repeat_ngram).")] = None
    no_repeat_adjacent: Annotated[bool | None, typer.Option(
        "--no-repeat-adjacent/--allow-repeat-adjacent",
        help="Never the same word twice in a row (default: models.no_repeat_adjacent).")] = None
    repetition_penalty: Annotated[float | None, typer.Option(
        min=1.0, help="Each earlier use of a word makes it r times less likely, 1: off (default: "
        "models.repetition_penalty).")] = None
    n_best: Annotated[int | None, typer.Option(
        "--n-best", min=1, help="Captions per clip, best first, at most the beam width (default: "
        "models.n_best).")] = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def decoding_options(*, n_best: bool = False) -> Callable[[Command], Command]:
    """Give a command the decoding options in place of its :class:`DecodingOptions` parameter
    (``--n-best`` only with ``n_best``: without, the command decodes one caption a clip)."""
    hints = get_type_hints(DecodingOptions, include_extras=True)
    names = [f.name for f in fields(DecodingOptions) if n_best or f.name != "n_best"]
    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=hints[name]) for name in names]  # fmt: skip

    def decorate(command: Command) -> Command:
        command_hints = get_type_hints(command, include_extras=True)
        (target,) = (name for name, hint in command_hints.items() if hint is DecodingOptions)
        del command_hints[target]
        signature = inspect.signature(command)
        # Typer reads the options' settings from the annotations: the resolved ones, not strings.
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=command_hints[p.name])
                  for p in signature.parameters.values() if p.name != target]
        at = list(signature.parameters).index(target)
        params[at:at] = options

        @functools.wraps(command)
        def run(**kwargs: Any) -> None:
            given = {"n_best": 1, **{name: kwargs.pop(name) for name in names}}
            command(**kwargs, **{target: DecodingOptions(**given)})

        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run  # type: ignore[return-value]

    return decorate


def decoding(settings: Settings, options: DecodingOptions) -> Any:
    """The configured :class:`~video_mm.models.decoding.Decoding` with the given options."""
    from video_mm.models.decoding import Decoding

    return Decoding.from_settings(settings.models, **options.given())


def with_decoding(settings: Settings, options: DecodingOptions) -> Settings:
    """``settings`` with the given decoding options written into ``[models]`` (the pipeline reads
    its decoding from there)."""
    given = options.given()
    if "max_len" in given:
        given["max_caption_len"] = given.pop("max_len")
    chosen = decoding(settings, options)  # refuse a bad combination here, not in the job
    given["beam_size"] = chosen.beam_size  # --n-best alone widens the beam to hold them
    models = settings.models.model_copy(update=given)
    return settings.model_copy(update={"models": models})
