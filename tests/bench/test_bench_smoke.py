"""`python -m bench --smoke`: the benchmark script runs end to end at tiny sizes and keeps
its output contract (a table, then one line of JSON). Speed is not judged here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.run import percentile

ROOT = Path(__file__).resolve().parents[2]
KEYS = [
    "intake_ratio",
    "burst_history_calls",
    "untracked_gets",
    "visible_p50_ms",
    "visible_p99_ms",
    "thread_read_p50_ms",
    "thread_read_p99_ms",
    "rss_mb",
]


def test_nearest_rank_percentile() -> None:
    samples = [float(value) for value in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_smoke_run_prints_the_table_and_a_json_last_line() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"BENCH_DATABASE_URL", "TEST_POSTGRES_URL", "DATABASE_URL"}
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert list(figures) == KEYS
    assert all(isinstance(value, int | float) for value in figures.values())
    # Correctness figures hold at any size: a burst is coalesced into one or two passes,
    # and mail in threads the service did not start is never fetched.
    assert 1 <= figures["burst_history_calls"] <= 2
    assert figures["untracked_gets"] == 0
    assert 0 < figures["visible_p50_ms"] <= figures["visible_p99_ms"]
    assert 0 < figures["thread_read_p50_ms"] <= figures["thread_read_p99_ms"]
    assert figures["intake_ratio"] > 0
    assert figures["rss_mb"] > 0
    table = "\n".join(lines[:-1])
    assert "SQLite" in table
    for label in ("(a) push intake", "(b) history.list", "(f) service RSS"):
        assert label in table
