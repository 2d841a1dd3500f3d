"""`python -m sandbox`: flags, environment variables and a real start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandbox.config import SandboxConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_contract() -> None:
    config = parse_config([], environ={})
    assert (config.host, config.port, config.smtp_port) == ("127.0.0.1", 8025, 8026)
    assert (config.client_id, config.client_secret) == (
        "sandbox-client-id",
        "sandbox-client-secret",
    )
    assert config.push_endpoint is None and config.push_audience is None
    assert config.push_service_account == "gmail-push@sandbox.iam.gserviceaccount.com"
    assert config.project == "sandbox-project"


def test_environment_then_flags_win() -> None:
    environ = {
        "SANDBOX_PORT": "9000",
        "SANDBOX_SMTP_PORT": "9001",
        "SANDBOX_PUSH_ENDPOINT": "http://127.0.0.1:8000/v1/webhooks/gmail",
        "SANDBOX_PUSH_AUDIENCE": "aud-from-env",
        "SANDBOX_AUTO_CONSENT": "true",
        "SANDBOX_REDIRECT_URIS": "http://a/cb, http://b/cb",
    }
    config = parse_config(["--port", "9100", "--no-auto-consent", "--clock-speed", "60"], environ)
    assert config.port == 9100 and config.smtp_port == 9001
    assert config.push_endpoint == "http://127.0.0.1:8000/v1/webhooks/gmail"
    assert config.push_audience == "aud-from-env"
    assert config.auto_consent is False and config.clock_speed == 60.0
    assert config.redirect_uris == ("http://a/cb", "http://b/cb")


def test_unknown_override_is_refused() -> None:
    with pytest.raises(TypeError):
        SandboxConfig().with_overrides(colour="blue")


def test_python_dash_m_sandbox_serves_until_interrupted() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", "--smtp-port", "0", "--auto-consent"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("sandbox Google on http://127.0.0.1:")
        base_url = banner.split(" on ")[1].strip()
        for _ in range(100):
            try:
                health = httpx.get(f"{base_url}/_sandbox/health", timeout=1.0)
                break
            except httpx.TransportError:
                import time

                time.sleep(0.05)
        assert health.json()["status"] == "ok"
        assert health.json()["smtp_port"] > 0
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    assert process.returncode == 0
