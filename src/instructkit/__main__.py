"""`python -m instructkit …` (what `accelerate launch -m instructkit …` runs on every rank)."""

from .cli.app import main

main()
