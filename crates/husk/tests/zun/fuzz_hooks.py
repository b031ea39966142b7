"""Schemathesis hooks for husk's Zun API fuzz: a check that a request the API rejected (4xx) changed nothing.

Before every request that could change something, the Zun-visible state (containers, capsules, quotas,
services, images) is read; after a 4xx answer it is read again and must be the same. Times that move on their
own (status_detail, last_seen_up) are left out of the comparison.
"""
import json
import os
import time
import urllib.request

import schemathesis

BASE = os.environ["HUSK_FUZZ_URL"]
STATE_PATHS = [
    "/v1/containers",
    "/v1/capsules",
    "/v1/quotas/default",
    "/v1/quota_classes/default",
    "/v1/services",
    "/v1/images",
]
VOLATILE = {"status_detail", "last_seen_up"}
BEFORE = {}


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def snapshot():
    state = {}
    for path in STATE_PATHS:
        request = urllib.request.Request(BASE + path, headers={"OpenStack-API-Version": "container 1.40"})
        with urllib.request.urlopen(request, timeout=30) as response:
            state[path] = _strip(json.load(response))
    return state


def settle(limit=5.0):
    """Waits until the state stops moving: an accepted request can have effects that land a moment later
    (a signalled process exits), and they must not be blamed on the next request."""
    deadline = time.time() + limit
    last = snapshot()
    while time.time() < deadline:
        time.sleep(0.4)
        now = snapshot()
        if now == last:
            return
        last = now


@schemathesis.hook
def after_call(context, case, response):
    if case.method.upper() in ("POST", "PUT", "PATCH", "DELETE") and response.status_code < 400:
        settle()


@schemathesis.hook
def before_call(context, case, **kwargs):
    if case.method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
        BEFORE[id(case)] = snapshot()


@schemathesis.check
def rejected_requests_change_nothing(ctx, response, case):
    before = BEFORE.pop(id(case), None)
    if before is None or not 400 <= response.status_code < 500:
        return None
    after = snapshot()
    if after != before:
        changed = [p for p in STATE_PATHS if before[p] != after[p]]
        raise AssertionError(
            f"{case.method} {case.formatted_path} was rejected with {response.status_code} "
            f"but changed {', '.join(changed)}"
        )
    return None
