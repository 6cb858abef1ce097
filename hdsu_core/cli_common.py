"""What the CLI modules share: the argument parser that fails in one line, the user-facing
error, and JSON / text output. Imports nothing of the project, so every CLI module can use it."""

from __future__ import annotations

import argparse
import json


class CliError(Exception):
    """A user-facing error: one line, exit code 2 (usage) or 1 (failure)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        raise CliError(f"{self.prog}: {message}", 2)


def emit(obj, as_json: bool, text: str | None = None) -> None:
    """Print ``obj`` as JSON, or ``text`` when given and JSON is not asked for."""
    if as_json:
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(text if text is not None else json.dumps(obj, indent=2, default=str))
