"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Two rules of the API cannot be written in JSON Schema, so a request drawn from
docs/openapi.json can be schema-valid and still rightly refused with a 400, which
schemathesis would report as "valid data rejected". Before each call these hooks make such a
request meet the rule, changing nothing else: a request that breaks the schema elsewhere still
breaks it, so negative cases stay negative.

- A Web Push subscription's `keys.p256dh` must be a point on the P-256 curve. The document
  gives its exact shape (base64url of 65 bytes starting 0x04), but a string of that shape drawn
  at random is almost never on the curve (`400 invalid_key`). A `p256dh` of the documented
  shape is replaced by a real public key; one that breaks the pattern is left alone.
- A notification's `title`, `body`, `category` and `data` (as compact JSON) together may not
  pass 4096 bytes (`400 payload_too_large`), though each alone may reach its own limit. When
  every one of them is within its own documented limit and together they pass 4096 bytes,
  `body` (then `title`) is cut short until they fit.
"""

import json
import re

import schemathesis

# The documented pattern of `subscription.keys.p256dh` (docs/openapi.json, WebPushSubscription).
P256DH_SHAPE = re.compile(r"\AB[A-P][A-Za-z0-9_-]{84}[AEIMQUYcgkosw048]=*\Z")
# A point on P-256 (the user agent's public key of RFC 8291's example), base64url unpadded.
ON_CURVE = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"


@schemathesis.hook("before_call")
def put_p256dh_on_the_curve(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict) or body.get("platform") != "web":
        return
    subscription = body.get("subscription")
    keys = subscription.get("keys") if isinstance(subscription, dict) else None
    p256dh = keys.get("p256dh") if isinstance(keys, dict) else None
    if isinstance(p256dh, str) and P256DH_SHAPE.match(p256dh):
        keys["p256dh"] = ON_CURVE


# The per-field limits of NotificationRequest in docs/openapi.json, and the limit of their sum.
FIELD_LIMITS = {"title": 1024, "body": 4096, "category": 64}
CONTENT_LIMIT = 4096


def _size(value):
    return len(value.encode("utf-8"))


@schemathesis.hook("before_call")
def fit_notification_content(context, case, kwargs):
    body = case.body
    if context.operation is None or context.operation.path != "/v1/notifications":
        return
    if not isinstance(body, dict):
        return
    strings = {}
    for name, limit in FIELD_LIMITS.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or _size(value) > limit:
            return  # breaks the schema already: leave it so
        strings[name] = value
    data = body.get("data")
    if data is not None and not isinstance(data, dict):
        return
    data_size = _size(json.dumps(data, separators=(",", ":"), ensure_ascii=False)) if data else 2
    excess = sum(_size(v) for v in strings.values()) + data_size - CONTENT_LIMIT
    for name in ("body", "title"):
        if excess <= 0:
            break
        if name in strings:
            value = strings[name].encode("utf-8")
            keep = max(0, len(value) - excess)
            cut = value[:keep].decode("utf-8", errors="ignore")
            excess -= len(value) - _size(cut)
            body[name] = cut


# A collapse_id within the document's 64 characters is taken for every channel but Web Push,
# whose Topic header allows at most 32 of [A-Za-z0-9_-] (`400 invalid_topic` when the user has a
# browser). A documented one is made Topic-safe: characters outside the set become `-`, and it is
# cut to 32; one that breaks the document (empty, too long, not a string) is left alone.
TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@schemathesis.hook("before_call")
def make_collapse_id_topic_safe(context, case, kwargs):
    body = case.body
    if context.operation is None or context.operation.path not in (
        "/v1/notifications",
        "/v1/notifications/batch",
    ):
        return
    items = body.get("notifications") if isinstance(body, dict) else None
    for item in items if isinstance(items, list) else [body]:
        if not isinstance(item, dict):
            continue
        cid = item.get("collapse_id")
        if isinstance(cid, str) and 1 <= len(cid) <= 64:
            item["collapse_id"] = TOPIC_UNSAFE.sub("-", cid)[:32]
