"""Command groups that several CLI modules add to (`vmm train captioner`, `vmm train retrieval`)."""

import typer

train_app = typer.Typer(help="Train captioners and retrieval models.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate trained models.", no_args_is_help=True)
