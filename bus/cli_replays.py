"""`bus replay start|status|cancel` (being written)."""
from __future__ import annotations

import argparse
from typing import Callable


def add_commands(sub, redis_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the subcommands to the `bus` parser's subparsers; `redis_option(parser)` adds --redis."""
