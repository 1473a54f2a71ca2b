"""Command-line interface (``difflab COMMAND``); see ``difflab.cli.main``."""
