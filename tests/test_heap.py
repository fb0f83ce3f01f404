"""The collector's settings of serve, worker and tail (bus.heap), seen from a real process."""
import json
import subprocess
import sys

import pytest

from bus import heap

_PROBE = """
import asyncio, gc, json, sys
from bus import cli, heap

async def make(stop):
    seen = {"threshold": gc.get_threshold(), "frozen_at_start": gc.get_freeze_count()}
    await asyncio.sleep(heap.SETTLE_SECONDS + 0.5)
    seen["frozen_later"] = gc.get_freeze_count()
    print(json.dumps(seen))

sys.exit(cli._run_until_signal(make))
"""


@pytest.fixture(scope="module")
def seen() -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_young_objects_are_collected_every_10000_allocations_not_700(seen):
    assert seen["threshold"] == [heap.YOUNG_THRESHOLD, 10, 10]


def test_the_startup_heap_is_frozen_out_of_later_collections(seen):
    assert seen["frozen_at_start"] == 0
    assert seen["frozen_later"] > 1000  # the modules and objects built at startup
