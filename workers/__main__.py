"""Entry point of `python -m workers`: the same commands as `python -m hosting` (serve,
configure), kept under the name they were first published with."""

from hosting.cli import app

app(prog_name="python -m workers")
