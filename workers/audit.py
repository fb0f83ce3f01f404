"""Example handler for the shop bus: logs every event it sees."""
import logging

log = logging.getLogger("workers.audit")


def log_event(event, context):
    log.info("audit %s %s from %s", event["detail-type"], event["id"], event["source"])
