"""A poison handler module: importing it raises SystemExit, as a stray sys.exit() at top level would."""
import sys

sys.exit("exit_at_import: leaving at import time")


def handler(event, context):  # never reached
    return {"ok": True}
