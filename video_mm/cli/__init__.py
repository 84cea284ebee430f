"""The ``vmm`` command line. Each public module in this package adds its commands with
``register(app)``; shared groups (``train``, ``eval``) live in ``_groups``. Other installed
surfaces add theirs the same way through the ``video_mm.cli`` entry point group (``vmm worker``
from the workers package), so this package imports none of them.

Commands are thin: they parse arguments, call the library, and print. Errors the library raises on
purpose (:class:`~video_mm.errors.VideoMMError`) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from importlib.metadata import entry_points

import click
import typer

from video_mm.cli._groups import eval_app, train_app
from video_mm.errors import VideoMMError

app = typer.Typer(
    name="vmm",
    help="video-mm: caption videos and search video archives by text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings wrap as paragraphs, `code` renders as code
)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}").register(app)
for _plugin in sorted(entry_points(group="video_mm.cli"), key=lambda ep: ep.name):
    _plugin.load()(app)


def main() -> None:
    """Console entry point: library errors exit 2 with one clear line, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except VideoMMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
