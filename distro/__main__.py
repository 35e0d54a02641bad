"""`python -m stellwerk`: the CLI under this interpreter (for subprocesses of tests and the lab)."""

from .cli import main

main()
