"""SigV4 verification against requests signed by botocore itself (no server needed)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bus.auth import sigv4
from bus.auth.errors import INCOMPLETE, INVALID_SIGNATURE, UNRECOGNIZED, AuthError

BODY = b'{"Entries":[]}'
SECRETS = {"AKIATEST00000001": "right-secret"}


def signed(secret: str = "right-secret", service: str = "events", region: str = "eu-west-1",
           url: str = "http://127.0.0.1:8080/", when: datetime | None = None) -> dict[str, str]:
    req = AWSRequest(method="POST", url=url, data=BODY,
                     headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AWSEvents.PutEvents"})
    auth = SigV4Auth(Credentials("AKIATEST00000001", secret), service, region)
    if when:  # a client whose clock is off: botocore reads it from this one function
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            auth.add_auth(req)
    else:
        auth.add_auth(req)
    headers = {k.lower(): v for k, v in req.headers.items()}
    headers["host"] = "127.0.0.1:8080"
    return headers


def verify(headers, body=BODY, path="/", query="", now=None):
    return sigv4.verify("POST", path, query, headers, body, SECRETS.get, now=now)


def code_of(headers, **kw) -> str:
    with pytest.raises(AuthError) as info:
        verify(headers, **kw)
    return info.value.code


def test_a_botocore_signature_verifies_and_names_key_and_region():
    assert verify(signed()) == sigv4.Signed("AKIATEST00000001", "eu-west-1")


def test_a_wrong_secret_a_changed_body_or_header_is_an_invalid_signature():
    assert code_of(signed(secret="wrong")) == INVALID_SIGNATURE
    assert code_of(signed(), body=b'{"Entries":[{}]}') == INVALID_SIGNATURE
    assert code_of({**signed(), "x-amz-target": "AWSEvents.PutRule"}) == INVALID_SIGNATURE


def test_an_unknown_key_is_unrecognized():
    headers = signed()
    headers["authorization"] = headers["authorization"].replace("AKIATEST00000001", "AKIAOTHER0000001")
    assert code_of(headers) == UNRECOGNIZED


def test_a_garbled_header_is_incomplete_and_another_service_is_refused():
    assert code_of({**signed(), "authorization": "AWS4-HMAC-SHA256 Credential=x"}) == INCOMPLETE
    with pytest.raises(AuthError) as info:
        verify(signed(service="sqs"))
    assert info.value.message == "Credential should be scoped to correct service: 'events'."


def test_a_percent_encoded_path_and_a_query_verify_as_botocore_signs_them():
    headers = signed(url="http://127.0.0.1:8080/dlq/a%3Ab?ids=x%20y&b=1")
    assert verify(headers, path="/dlq/a%3Ab", query="ids=x%20y&b=1").region == "eu-west-1"


def test_clock_skew_beyond_15_minutes_is_expired_or_not_yet_current():
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert verify(signed(when=now - timedelta(minutes=14)), now=now)
    with pytest.raises(AuthError) as old:
        verify(signed(when=now - timedelta(minutes=16)), now=now)
    assert (old.value.code, old.value.message) == (INVALID_SIGNATURE, "Signature expired: 20240501T114400Z is now "
                                                   "earlier than 20240501T114500Z (20240501T120000Z - 15 min.)")
    with pytest.raises(AuthError) as future:
        verify(signed(when=now + timedelta(minutes=16)), now=now)
    assert future.value.message.startswith("Signature not yet current: 20240501T121600Z is still later than")
