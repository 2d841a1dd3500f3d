"""The benchmark run: one table of figures, then the same figures as one line of JSON.

Everything runs on this machine over loopback: the sandbox (local Google) in a thread of
this process, the service and a bare FastAPI yardstick under uvicorn in processes of
their own, PostgreSQL (or SQLite with --smoke) in a scratch database.

    (a) push intake requests/s over a bare FastAPI endpoint's, same POST, same uvicorn
    (b) history.list calls for a burst of 100 pushes to one mailbox
    (c) messages.get calls per untracked new message
    (d) push -> reply visible through the API, p50 and p99
    (e) GET /v1/leads/{id}/threads p50/p99 over 1,000,000 messages in 10,000 mailboxes
    (f) RSS of the service process after 10,000 pushes
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
from cryptography.fernet import Fernet
from sqlalchemy import text

from app.db import create_engine
from bench import seed
from bench.database import scratch_database
from bench.load import LoadResult, post_request, run_load, run_wrk, wrk_available
from bench.procs import Server, free_port, uvicorn_server
from sandbox.testing import RunningSandbox, run_sandbox

DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
WEBHOOK = "/v1/webhooks/gmail"
INTAKE_AUDIENCE = "https://bench.leadmail.test/v1/webhooks/gmail"
RETURN_ORIGIN = "http://bench.leadmail.test"
TARGETS = {
    "intake_ratio": (">=", 0.5),
    "burst_history_calls": ("<=", 2),
    "untracked_gets": ("==", 0),
    "visible_p99_ms": ("<=", 250),
    "thread_read_p99_ms": ("<=", 20),
    "rss_mb": ("<=", 150),
}


@dataclass(frozen=True)
class Sizes:
    shape: seed.Shape
    intake_rounds: int
    intake_seconds: float  # per round, with wrk
    intake_requests: int  # per round, with the Python client
    rss_pushes: int
    burst_pushes: int
    burst_changes: int
    untracked: int
    latency_mailboxes: int
    latency_samples: int
    thread_reads: int


FULL = Sizes(
    shape=seed.Shape(
        mailboxes=10_000, threads_per_mailbox=20, messages_per_thread=5, leads_per_mailbox=10
    ),
    intake_rounds=3,
    intake_seconds=8.0,
    intake_requests=12_000,
    rss_pushes=10_000,
    burst_pushes=100,
    burst_changes=20,
    untracked=50,
    latency_mailboxes=10,
    latency_samples=200,
    thread_reads=2000,
)
SMOKE = Sizes(
    shape=seed.Shape(
        mailboxes=20, threads_per_mailbox=4, messages_per_thread=3, leads_per_mailbox=2
    ),
    intake_rounds=1,
    intake_seconds=2.0,
    intake_requests=300,
    rss_pushes=300,
    burst_pushes=100,
    burst_changes=5,
    untracked=4,
    latency_mailboxes=2,
    latency_samples=6,
    thread_reads=40,
)


@dataclass
class Figures:
    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    details: list[tuple[str, str]] = field(default_factory=list)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def envelope(email: str, history_id: int) -> bytes:
    """A wrapped Pub/Sub push body, as Google sends it."""
    data = json.dumps({"emailAddress": email, "historyId": history_id}).encode()
    message_id = str(random.randrange(10**15, 10**16))
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "messageId": message_id,
                "message_id": message_id,
                "publishTime": "2026-12-03T19:13:55.749Z",
                "publish_time": "2026-12-03T19:13:55.749Z",
            },
            "subscription": "projects/sandbox-project/subscriptions/gmail-push",
        },
        separators=(",", ":"),
    ).encode()


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the service did not get there in time")
        await asyncio.sleep(interval)


# --- (a) push intake against the bare yardstick ---------------------------------------------


async def measure_intake(
    google: RunningSandbox,
    env: dict[str, str],
    sizes: Sizes,
    figures: Figures,
    workdir: Path,
    use_wrk: bool,
) -> None:
    token = f"Bearer {google.push_token(audience=INTAKE_AUDIENCE)}"
    rng = random.Random(11)
    next_id = seed.START_CURSOR + 1

    def bodies(count: int) -> list[bytes]:
        nonlocal next_id
        made = [
            envelope(seed.address_of(rng.randrange(sizes.shape.mailboxes)), next_id + index)
            for index in range(count)
        ]
        next_id += count
        return made

    service_env = {**env, "PUBSUB_PUSH_AUDIENCE": INTAKE_AUDIENCE, "BACKGROUND_DUTIES": "false"}
    rates: dict[str, list[float]] = {"bare": [], "intake": []}
    cpu: dict[str, list[float]] = {"bare": [], "intake": []}
    ratios: list[float] = []
    with (
        uvicorn_server("bench.bare:app", env, ready_path="/docs") as bare,
        uvicorn_server("app.main:app", service_env) as service,
    ):
        servers = {"bare": bare, "intake": service}
        for server in servers.values():
            await _load(server, bodies(1000), token, use_wrk, 2.0, workdir)  # warm-up
        for round_number in range(sizes.intake_rounds):
            order = ["bare", "intake"] if round_number % 2 == 0 else ["intake", "bare"]
            measured: dict[str, float] = {}
            for name in order:
                server = servers[name]
                count = int(sizes.intake_requests * (3 if use_wrk else 1))
                started_cpu = server.cpu_seconds()
                result = await _load(
                    server, bodies(count), token, use_wrk, sizes.intake_seconds, workdir
                )
                if set(result.statuses) != {204}:
                    raise RuntimeError(f"{name} answered {result.statuses}")
                measured[name] = result.rate
                rates[name].append(result.rate)
                cpu[name].append((server.cpu_seconds() - started_cpu) / result.requests * 1e6)
            ratios.append(measured["intake"] / measured["bare"])
    figures.values["intake_ratio"] = round(statistics.median(ratios), 3)
    figures.notes["intake_ratio"] = (
        f"{statistics.median(rates['intake']):.0f} vs {statistics.median(rates['bare']):.0f} req/s"
    )
    figures.details += [
        ("intake requests/s (median of rounds)", f"{statistics.median(rates['intake']):.0f}"),
        ("bare FastAPI requests/s (median of rounds)", f"{statistics.median(rates['bare']):.0f}"),
        ("intake / bare per round", ", ".join(f"{ratio:.2f}" for ratio in ratios)),
        (
            "server CPU per request, intake / bare (us)",
            f"{statistics.median(cpu['intake']):.0f} / {statistics.median(cpu['bare']):.0f}",
        ),
    ]


async def _load(
    server: Server,
    bodies: list[bytes],
    token: str,
    use_wrk: bool,
    seconds: float,
    workdir: Path,
) -> LoadResult:
    if use_wrk:
        return await asyncio.to_thread(
            run_wrk, server.url, WEBHOOK, bodies, token, seconds=seconds, workdir=workdir
        )
    headers = {"Authorization": token}
    requests = [post_request("127.0.0.1", server.port, WEBHOOK, body, headers) for body in bodies]
    return await run_load("127.0.0.1", server.port, requests, concurrency=32)


# --- the live service: linked mailboxes and conversations -------------------------------------


@dataclass
class Talk:
    rep: str
    customer: str
    org_id: str
    user_id: str
    lead_id: str
    mailbox_id: str
    thread_id: str
    rfc822_message_id: str
    messages: int = 1


class Live:
    """The service under test (sync engine on) and what the benchmark set up in it."""

    def __init__(self, google: RunningSandbox, server: Server, secret: str, db_url: str) -> None:
        self.google = google
        self.server = server
        self.secret = secret
        self.db_url = db_url
        self.http = httpx.AsyncClient(base_url=server.url, timeout=30.0, trust_env=False)
        self.push_auth = f"Bearer {google.push_token(audience=f'{server.url}{WEBHOOK}')}"

    def bearer(self, user_id: str, org_id: str, **claims: Any) -> dict[str, str]:
        payload = {"sub": user_id, "org": org_id, "exp": int(time.time()) + 7200, **claims}
        return {"Authorization": f"Bearer {jwt.encode(payload, self.secret, algorithm='HS256')}"}

    async def start_talk(self, index: int) -> Talk:
        """Link a rep's Gmail through the real consent flow, then send a lead a first mail."""
        tag = secrets.token_hex(4)
        rep, customer = f"rep-{index}-{tag}@live.example", f"lead-{index}-{tag}@customer.example"
        org_id, user_id, lead_id = f"live-org-{tag}", f"live-user-{tag}", f"live-lead-{tag}"
        self.google.create_account(rep, f"Rep {index}")
        headers = self.bearer(user_id, org_id, email=rep)
        started = await self.http.post(
            "/v1/mailboxes/connect", json={"return_url": f"{RETURN_ORIGIN}/done"}, headers=headers
        )
        started.raise_for_status()
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as browser:
            consent = await browser.get(started.json()["authorization_url"])
            callback = await browser.get(consent.headers["location"])
        result = dict(parse_qsl(urlsplit(callback.headers["location"]).query))
        if result.get("status") != "connected":
            raise RuntimeError(f"linking failed: {result}")
        sent = await self.http.post(
            f"/v1/leads/{lead_id}/messages",
            json={"to": [customer], "subject": f"Offer {index}", "body_text": "Here it is."},
            headers=headers,
        )
        sent.raise_for_status()
        body = sent.json()
        return Talk(
            rep,
            customer,
            org_id,
            user_id,
            lead_id,
            result["mailbox_id"],
            body["thread_id"],
            body["rfc822_message_id"],
        )

    def history_id(self, email: str) -> int:
        return int(self.google.account(email)["history_id"])

    async def push(self, email: str, history_id: int) -> None:
        answer = await self.http.post(
            WEBHOOK, content=envelope(email, history_id), headers={"Authorization": self.push_auth}
        )
        if answer.status_code != 204:
            raise RuntimeError(f"push answered {answer.status_code}: {answer.text}")

    async def message_count(self, talk: Talk) -> int:
        answer = await self.http.get(
            f"/v1/threads/{talk.thread_id}", headers=self.bearer(talk.user_id, talk.org_id)
        )
        answer.raise_for_status()
        return len(answer.json()["messages"])

    async def caught_up(self, talk: Talk, history_id: int) -> bool:
        """Whether the mailbox's cursor has reached `history_id` with nothing pending."""
        engine = create_engine(self.db_url)
        try:
            async with engine.connect() as connection:
                row = (
                    await connection.execute(
                        text(
                            "SELECT history_cursor, pending_history_id FROM mailboxes"
                            " WHERE id = :id"
                        ),
                        {"id": talk.mailbox_id},
                    )
                ).one()
        finally:
            await engine.dispose()
        cursor, pending = row
        return cursor is not None and cursor >= history_id and (pending or 0) <= cursor

    async def aclose(self) -> None:
        await self.http.aclose()


async def measure_untracked(live: Live, talk: Talk, sizes: Sizes, figures: Figures) -> None:
    """(c): new threads the customer starts are decided from history alone, never fetched."""
    untracked = [
        live.google.customer_new_thread(
            f"stranger-{index}@customer.example", [talk.rep], f"Question {index}", "Hello there."
        )["delivered"][0]["id"]
        for index in range(sizes.untracked)
    ]
    live.google.customer_reply(talk.customer, message_id=talk.rfc822_message_id, text="Yes.")
    await live.push(talk.rep, live.history_id(talk.rep))
    talk.messages += 1

    async def visible() -> bool:
        return await live.message_count(talk) >= talk.messages

    await wait_until(visible)
    gets = [
        call
        for call in live.google.calls("gmail.users.messages.get")
        if call["path"].rsplit("/", 1)[-1] in set(untracked)
    ]
    figures.values["untracked_gets"] = len(gets) / len(untracked)
    figures.notes["untracked_gets"] = f"{len(gets)} gets for {len(untracked)} untracked messages"


async def measure_burst(live: Live, talk: Talk, sizes: Sizes, figures: Figures) -> None:
    """(b): a burst of pushes for one mailbox, history ids rising as Gmail's would."""
    live.google.clear_calls()
    history_ids = []
    for index in range(sizes.burst_changes):
        live.google.customer_reply(
            talk.customer, message_id=talk.rfc822_message_id, text=f"Burst reply {index}."
        )
        history_ids.append(live.history_id(talk.rep))
    talk.messages += sizes.burst_changes
    pushes = [
        history_ids[index * len(history_ids) // sizes.burst_pushes]
        for index in range(sizes.burst_pushes)
    ]
    semaphore = asyncio.Semaphore(32)

    async def push(history_id: int) -> None:
        async with semaphore:
            await live.push(talk.rep, history_id)

    await asyncio.gather(*(push(history_id) for history_id in pushes))

    async def done() -> bool:
        return await live.message_count(talk) >= talk.messages and await live.caught_up(
            talk, history_ids[-1]
        )

    await wait_until(done)
    await asyncio.sleep(0.5)  # any second pass would have started by now
    calls = len(live.google.calls("gmail.users.history.list"))
    figures.values["burst_history_calls"] = calls
    figures.notes["burst_history_calls"] = (
        f"{sizes.burst_pushes} pushes over {sizes.burst_changes} new replies"
    )


async def measure_visibility(live: Live, talks: list[Talk], sizes: Sizes, figures: Figures) -> None:
    """(d): from the push's POST to the reply in GET /v1/threads/{id}."""
    samples: list[float] = []
    for index in range(sizes.latency_samples):
        talk = talks[index % len(talks)]
        live.google.customer_reply(
            talk.customer, message_id=talk.rfc822_message_id, text=f"Reply {index}."
        )
        history_id = live.history_id(talk.rep)
        talk.messages += 1
        started = time.perf_counter()
        await live.push(talk.rep, history_id)
        while await live.message_count(talk) < talk.messages:
            await asyncio.sleep(0.002)
        samples.append((time.perf_counter() - started) * 1000)
    figures.values["visible_p50_ms"] = round(percentile(samples, 0.5), 1)
    figures.values["visible_p99_ms"] = round(percentile(samples, 0.99), 1)
    figures.notes["visible_p99_ms"] = f"{len(samples)} replies, polled every 2 ms"


async def measure_reads(live: Live, sizes: Sizes, figures: Figures) -> None:
    """(e): a lead's conversations, read from the bulk-loaded data."""
    rng = random.Random(5)
    shape = sizes.shape
    samples: list[float] = []
    for index in range(sizes.thread_reads + 50):
        mailbox = rng.randrange(shape.mailboxes)
        lead = seed.lead_of(mailbox, rng.randrange(shape.leads_per_mailbox))
        headers = live.bearer("reader", seed.org_of(mailbox, shape))
        started = time.perf_counter()
        answer = await live.http.get(f"/v1/leads/{lead}/threads", headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        answer.raise_for_status()
        if not answer.json()["items"]:
            raise RuntimeError(f"no threads for {lead}")
        if index >= 50:  # the first ones warm caches
            samples.append(elapsed)
    figures.values["thread_read_p50_ms"] = round(percentile(samples, 0.5), 2)
    figures.values["thread_read_p99_ms"] = round(percentile(samples, 0.99), 2)
    per_lead = shape.threads_per_mailbox // shape.leads_per_mailbox
    figures.notes["thread_read_p99_ms"] = (
        f"{len(samples)} reads, {per_lead} threads x {shape.messages_per_thread} messages each"
    )


async def measure_memory(live: Live, talks: list[Talk], sizes: Sizes, figures: Figures) -> None:
    """(f): the service's RSS once it has taken the pushes and synced what they named."""
    marks = {talk.rep: live.history_id(talk.rep) for talk in talks}
    requests = []
    for index in range(sizes.rss_pushes):
        talk = talks[index % len(talks)]
        body = envelope(talk.rep, marks[talk.rep])
        requests.append(
            post_request(
                "127.0.0.1", live.server.port, WEBHOOK, body, {"Authorization": live.push_auth}
            )
        )
    result = await run_load("127.0.0.1", live.server.port, requests, concurrency=32)
    if set(result.statuses) != {204}:
        raise RuntimeError(f"pushes answered {result.statuses}")
    for talk in talks:

        async def done(talk: Talk = talk) -> bool:
            return await live.caught_up(talk, marks[talk.rep])

        await wait_until(done)
    figures.values["rss_mb"] = round(live.server.rss_mb(), 1)
    figures.notes["rss_mb"] = f"after {sizes.rss_pushes} more pushes and the syncs they caused"


async def measure_live(
    google: RunningSandbox,
    env: dict[str, str],
    db_url: str,
    secret: str,
    sizes: Sizes,
    figures: Figures,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    live_env = {
        **env,
        "PUBSUB_PUSH_AUDIENCE": f"{base}{WEBHOOK}",
        "OAUTH_REDIRECT_URI": f"{base}/v1/oauth/google/callback",
        "ALLOWED_RETURN_ORIGINS": RETURN_ORIGIN,
        "DEFAULT_FROM_ADDRESS": "crm@bench.leadmail.example",
        "BACKGROUND_DUTIES": "true",
    }
    # The benchmark delivers every push itself, at the moment it measures from.
    google.set_push_endpoint(None)
    with uvicorn_server("app.main:app", live_env, port=port) as server:
        live = Live(google, server, secret, db_url)
        try:
            talks = [await live.start_talk(index) for index in range(sizes.latency_mailboxes + 2)]
            await measure_untracked(live, talks[-1], sizes, figures)
            await measure_burst(live, talks[-2], sizes, figures)
            await measure_visibility(live, talks[: sizes.latency_mailboxes], sizes, figures)
            await measure_reads(live, sizes, figures)
            await measure_memory(live, talks, sizes, figures)
        finally:
            await live.aclose()


async def forget_intake_pushes(db_url: str) -> None:
    """The intake figure's pushes named bulk-loaded mailboxes that have no Gmail behind
    them; the live service must not try to sync those."""
    engine = create_engine(db_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE mailboxes SET pending_history_id = NULL"))
    finally:
        await engine.dispose()


async def run(sizes: Sizes, server_url: str | None, use_wrk: bool) -> Figures:
    figures = Figures()
    secret = secrets.token_urlsafe(32)
    with (
        tempfile.TemporaryDirectory(prefix="leadmail-bench-") as scratch,
        run_sandbox(auto_consent=True, log_level="error") as google,
    ):
        workdir = Path(scratch)
        async with scratch_database(server_url, workdir) as db_url:
            started = time.perf_counter()
            await seed.load(db_url, sizes.shape)
            figures.details.append(
                (
                    "bulk load",
                    f"{sizes.shape.messages:,} messages, {sizes.shape.threads:,} threads, "
                    f"{sizes.shape.mailboxes:,} mailboxes in {time.perf_counter() - started:.0f} s",
                )
            )
            env = {
                **google.env(),
                "DATABASE_URL": db_url,
                "API_JWT_SECRET": secret,
                "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            }
            await measure_intake(google, env, sizes, figures, workdir, use_wrk)
            await forget_intake_pushes(db_url)
            await measure_live(google, env, db_url, secret, sizes, figures)
    return figures


# The table's rows, in the order of the JSON line too.
FIGURES = [
    ("(a) push intake / bare FastAPI (requests/s)", "intake_ratio"),
    ("(b) history.list calls, burst of pushes", "burst_history_calls"),
    ("(c) messages.get per untracked message", "untracked_gets"),
    ("(d) push -> reply visible, p50 (ms)", "visible_p50_ms"),
    ("(d) push -> reply visible, p99 (ms)", "visible_p99_ms"),
    ("(e) GET lead threads, p50 (ms)", "thread_read_p50_ms"),
    ("(e) GET lead threads, p99 (ms)", "thread_read_p99_ms"),
    ("(f) service RSS (MB)", "rss_mb"),
]


def _verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    op, bound = TARGETS[key]
    ok = {">=": value >= bound, "<=": value <= bound, "==": value == bound}[op]
    return f"{op} {bound:g}  {'ok' if ok else 'MISSED'}"


def render(figures: Figures, header: str) -> str:
    width = max(len(label) for label, _ in FIGURES) + 2
    lines = [header, "", f"{'figure':<{width}}{'measured':>10}  {'target':<16}notes"]
    lines.append("-" * (width + 60))
    for label, key in FIGURES:
        value = figures.values[key]
        shown = f"{value:g}"
        lines.append(
            f"{label:<{width}}{shown:>10}  {_verdict(key, value):<16}{figures.notes.get(key, '')}"
        )
    lines.append("")
    for label, detail in figures.details:
        lines.append(f"  {label}: {detail}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes on SQLite: checks the script, not speed"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", os.environ.get("TEST_POSTGRES_URL")),
        help=f"a PostgreSQL server to create a scratch database on (default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load client for the intake figure (auto: wrk when installed)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    server_url = (
        None if args.smoke and not args.database_url else args.database_url or DEFAULT_SERVER
    )
    use_wrk = not args.smoke and (
        args.client == "wrk" or (args.client == "auto" and wrk_available())
    )
    backend = "SQLite" if server_url is None else "PostgreSQL"
    started = time.perf_counter()
    figures = asyncio.run(run(sizes, server_url, use_wrk))
    header = (
        f"leadmail benchmark{' (smoke: tiny sizes, not a measurement)' if args.smoke else ''}"
        f" - {backend}, sandbox over loopback, {os.cpu_count()} CPUs, "
        f"intake load by {'wrk' if use_wrk else 'a Python keep-alive client'}, 32 connections; "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(render(figures, header))
    print(json.dumps({key: figures.values[key] for _, key in FIGURES}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
