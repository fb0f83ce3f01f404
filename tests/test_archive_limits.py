"""The cap on archives made through the API (BUS_MAX_API_ARCHIVES): LimitExceededException, as AWS
answers over its quota; YAML archives do not count against it."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

SHOP = "arn:aws:events:us-east-1:000000000000:event-bus/shop"
YAML = """
buses:
  - {name: shop}
archives:
  - {name: yaml-archive, bus: shop}
"""


def test_an_archive_over_the_api_cap_is_limit_exceeded(stack, events_client):
    stack.env["BUS_MAX_API_ARCHIVES"] = "1"
    stack.write_rules(YAML)
    stack.start_broker()
    client = events_client(stack.url)
    client.create_archive(ArchiveName="first", EventSourceArn=SHOP)  # the YAML one does not count
    with pytest.raises(ClientError) as err:
        client.create_archive(ArchiveName="second", EventSourceArn=SHOP)
    assert err.value.response["Error"]["Code"] == "LimitExceededException"
    client.delete_archive(ArchiveName="first")
    client.create_archive(ArchiveName="second", EventSourceArn=SHOP)  # a deleted one frees its place
