"""Entry point of `python -m registry`."""

from registry.cli import app

app(prog_name="python -m registry")
