"""Example async handler: would notify someone about a big order."""
import asyncio
import logging

log = logging.getLogger("workers.notify")


async def big_order(event, context):
    await asyncio.sleep(0)  # stands in for an HTTP call to a chat or mail service
    log.info("big order! %s amount=%s (%d ms left)", event["id"], event["detail"].get("amount"),
             context.get_remaining_time_in_millis())
    return {"notified": True}
