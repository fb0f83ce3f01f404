"""Verify an AWS Signature Version 4 request the way botocore signs it (reference §1.1-1.5).

Pure: the caller hands in the method, the raw (still %-encoded) path and query, the headers,
the body and a clock; we answer the access key id that signed it, or raise AuthError.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping
from urllib.parse import quote, unquote

from bus.auth.errors import INCOMPLETE, INVALID_SIGNATURE, UNRECOGNIZED, AuthError

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "events"
MAX_SKEW = timedelta(minutes=15)  # JSON services (DynamoDB, STS) say 15 min; Lambda's 5 min is REST
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request,"
                   r"\s*SignedHeaders=([a-z0-9;._-]+),\s*Signature=([0-9a-f]{64})\s*$")
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


@dataclass(frozen=True)
class Signed:
    """What a verified signature tells us."""

    access_key_id: str
    region: str


def is_sigv4(authorization: str) -> bool:
    return authorization.startswith(ALGORITHM)


def verify(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], body: bytes,
           secret_for: Callable[[str], str | None], now: datetime | None = None, service: str = SERVICE) -> Signed:
    """`headers` maps lower-case names to values (repeated headers already joined with ',');
    `service`: what the credential scope must name ("lambda" on Lambda's API paths)."""
    authorization = headers.get("authorization", "")
    m = _AUTH.match(authorization)
    if not m:
        raise AuthError(INCOMPLETE, f"Authorization header requires 'Credential', 'Signature' and "
                                    f"'SignedHeaders' parameters in the {ALGORITHM} format.")
    key_id, scope_date, region, scope_service, signed_headers, signature = m.groups()
    secret = secret_for(key_id)
    if secret is None:
        raise AuthError(UNRECOGNIZED)
    if scope_service != service:
        raise AuthError(INVALID_SIGNATURE, f"Credential should be scoped to correct service: '{service}'.")
    amz_date = headers.get("x-amz-date", "")
    if not amz_date:
        raise AuthError(INCOMPLETE, "Authorization header requires existence of either a 'X-Amz-Date' "
                                    "or a 'Date' header.")
    if amz_date[:8] != scope_date:
        raise AuthError(INVALID_SIGNATURE, "Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                                           f"version of date from HTTP: '{scope_date}' != '{amz_date[:8]}', "
                                           f"from '{amz_date}'.")
    _check_clock(amz_date, now or datetime.now(timezone.utc))
    names = signed_headers.split(";")
    if "host" not in names:
        raise AuthError(INCOMPLETE, "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    expected = signature_for(secret, method, raw_path, raw_query, headers, body, names, amz_date,
                             f"{scope_date}/{region}/{service}/aws4_request")
    if not hmac.compare_digest(expected, signature):
        raise AuthError(INVALID_SIGNATURE)
    return Signed(key_id, region)


def _check_clock(amz_date: str, now: datetime) -> None:
    try:
        signed_at = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=timezone.utc)
    except ValueError:
        raise AuthError(INCOMPLETE, f"X-Amz-Date '{amz_date}' is not in the format YYYYMMDD'T'HHMMSS'Z'.") from None
    minutes = int(MAX_SKEW.total_seconds() // 60)
    if signed_at < now - MAX_SKEW:
        raise AuthError(INVALID_SIGNATURE, f"Signature expired: {amz_date} is now earlier than "
                                           f"{_fmt(now - MAX_SKEW)} ({_fmt(now)} - {minutes} min.)")
    if signed_at > now + MAX_SKEW:
        raise AuthError(INVALID_SIGNATURE, f"Signature not yet current: {amz_date} is still later than "
                                           f"{_fmt(now + MAX_SKEW)} ({_fmt(now)} + {minutes} min.)")


def _fmt(t: datetime) -> str:
    return t.strftime(_AMZ_DATE)


def signature_for(secret: str, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str],
                  body: bytes, names: list[str], amz_date: str, scope: str) -> str:
    canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in names)
    request = "\n".join([method, canonical_uri(raw_path), canonical_query(raw_query), canonical_headers,
                         ";".join(names), _payload_hash(headers, body)])
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode()).hexdigest()])
    date, region, service, _ = scope.split("/")
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def canonical_uri(raw_path: str) -> str:
    # botocore (non-S3) quotes the already-encoded path again: %3A is signed as %253A.
    return quote(raw_path or "/", safe="/~")


def canonical_query(raw_query: str) -> str:
    pairs = []
    for part in filter(None, raw_query.split("&")):
        k, _, v = part.partition("=")
        pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    actual = hashlib.sha256(body).hexdigest()
    claimed = headers.get("x-amz-content-sha256")
    if claimed is None or claimed == UNSIGNED_PAYLOAD:
        # UNSIGNED-PAYLOAD is signed as that literal, so a client that chose it keeps that choice;
        # boto3 never sends it for events.
        return claimed or actual
    if claimed != actual:
        raise AuthError(INVALID_SIGNATURE, "The provided 'x-amz-content-sha256' header does not match what was computed.")
    return claimed
