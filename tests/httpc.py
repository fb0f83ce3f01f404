"""A tiny blocking HTTP client for tests (stdlib only)."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request


def post(url: str, body: bytes | str | object, headers: dict | None = None) -> tuple[int, dict]:
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def scrape(url: str) -> str:
    """Metrics text, or "" while the process is not listening yet."""
    try:
        return get_text(url)
    except OSError:
        return ""


def aws(url: str, operation: str, body: object) -> tuple[int, dict]:
    return post(url + "/", body, {"X-Amz-Target": f"AWSEvents.{operation}",
                                  "Content-Type": "application/x-amz-json-1.1"})


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (labels in any order), 0.0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, rest = sample.partition("{")
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        if sample_name == name and found == labels:
            return float(value)
    return 0.0
