"""Sending to leads: from the rep's Gmail, else through the default SMTP sender.

router.py     POST /v1/leads/{lead_id}/messages, GET /v1/outbox
service.py    phase one: validate, render, route, thread headers -> a `queued` row
delivery.py   phase two: Gmail (retries, 401 refresh) or SMTP; `sent` or `failed`
reconcile.py  rows a crash left `queued`: looked up in Gmail before anything is resent
smtp.py       the default sender (DEFAULT_SMTP_URL: smtp:// STARTTLS, smtps:// implicit TLS)
retry.py      jittered backoff honouring Google's retry time, within a budget
"""
