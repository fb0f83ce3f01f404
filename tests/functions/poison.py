"""Poison handlers: each ends its call with a BaseException that is not an Exception."""
import asyncio
import sys


async def exit_async(event, context):
    await asyncio.sleep(0)
    sys.exit(3)


async def interrupt_async(event, context):
    await asyncio.sleep(0)
    raise KeyboardInterrupt("interrupt_async")


async def cancel_async(event, context):
    """Raises CancelledError itself: nobody cancelled it, so it is this call's failure."""
    await asyncio.sleep(0)
    raise asyncio.CancelledError("cancel_async")


def exit_sync(event, context):
    sys.exit(3)


async def hang_async(event, context):
    """Sleeps until cancelled (no recording: unit tests call it without BUSWAY_TEST_OUT)."""
    await asyncio.sleep(60)
