"""Entry point of `python -m hosting`."""

from hosting.cli import app

app(prog_name="python -m hosting")
