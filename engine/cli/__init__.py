"""The ``provision`` command line: commands, output formatting and the demo (an edge layer)."""
from engine.cli.main import main

__all__ = ["main"]
