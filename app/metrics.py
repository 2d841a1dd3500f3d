"""Every Prometheus metric the service exports, declared in one place."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "leadmail_http_requests_total",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "leadmail_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["route", "method"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUSHES = Counter(
    "leadmail_pushes_total",
    "Gmail notifications taken in (push or pull), by outcome.",
    ["outcome"],
)
GMAIL_CALLS = Counter(
    "leadmail_gmail_calls_total", "Gmail API calls by method and HTTP status.", ["method", "status"]
)
GMAIL_QUOTA_UNITS = Counter(
    "leadmail_gmail_quota_units_total", "Gmail quota units spent, by method.", ["method"]
)
TOKEN_REFRESHES = Counter(
    "leadmail_token_refreshes_total", "OAuth access-token refreshes by outcome.", ["outcome"]
)
MAILBOXES = Gauge("leadmail_mailboxes", "Linked mailboxes by status.", ["status"])
WATCH_RENEWALS = Counter(
    "leadmail_watch_renewals_total", "users.watch renewals by outcome.", ["outcome"]
)
SENDS = Counter("leadmail_sends_total", "Sends by sent_via and outcome.", ["sent_via", "outcome"])
SYNC_PASSES = Counter("leadmail_sync_passes_total", "Mailbox sync passes by outcome.", ["outcome"])
SYNC_LAG = Histogram(
    "leadmail_sync_lag_seconds",
    "Time from a recorded notification to the end of the sync pass that covered it.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CURSOR_LAG = Gauge(
    "leadmail_sync_cursor_lag", "Largest (pending history id - cursor) over active mailboxes."
)
MESSAGES_STORED = Counter(
    "leadmail_messages_stored_total", "Messages stored by sync, by direction.", ["direction"]
)
RECOVERED_MESSAGES = Counter(
    "leadmail_recovered_messages_total", "Messages recovered by gap recovery after a history 404."
)
