"""The command layer: the `instructkit` Typer app (`app.py`) and one module per command group.

Command modules parse options, call one entry function of an area (data, train, evaluate, synth,
pipeline) or an executor, and print; no area imports from here.
"""

from .app import app, main

__all__ = ["app", "main"]
