"""`make run`: the sandbox and the service wired together on SQLite, with demo data.

Development secrets are generated once and kept in var/dev-secrets.json, so the
demo database's encrypted tokens stay readable across restarts. Ctrl-C stops both
processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from app.crypto import generate_key
from app.pubsub.emulator import EmulatorUnavailable, start_emulator, stop_emulator

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
SERVICE = "http://127.0.0.1:8000"
SANDBOX_PORT = 8025
SANDBOX_SMTP_PORT = 8026
SANDBOX = f"http://127.0.0.1:{SANDBOX_PORT}"
TOPIC = "projects/sandbox-project/topics/gmail"
REP = "rep@acme.example"
CUSTOMER = "casey@client.example"
PUBSUB_EMULATOR_PORT = 8085
SUBSCRIPTION = "projects/sandbox-project/subscriptions/leadmail"
ORG = "demo-org"
USER = "demo-rep"


def dev_secrets() -> dict[str, str]:
    path = VAR / "dev-secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    secrets = {
        "API_JWT_SECRET": generate_key(),
        "TOKEN_ENCRYPTION_KEYS": generate_key(),
    }
    path.write_text(json.dumps(secrets, indent=2))
    path.chmod(0o600)
    return secrets


def service_env(secrets: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(secrets)
    env.update(
        {
            "DATABASE_URL": f"sqlite+aiosqlite:///{VAR / 'leadmail.db'}",
            "GOOGLE_CLIENT_ID": "sandbox-client-id",
            "GOOGLE_CLIENT_SECRET": "sandbox-client-secret",
            "GOOGLE_AUTH_URI": f"{SANDBOX}/o/oauth2/v2/auth",
            "GOOGLE_TOKEN_URI": f"{SANDBOX}/token",
            "GOOGLE_REVOKE_URI": f"{SANDBOX}/revoke",
            "GOOGLE_CERTS_URI": f"{SANDBOX}/oauth2/v1/certs",
            "GMAIL_API_BASE_URL": SANDBOX,
            "OAUTH_REDIRECT_URI": f"{SERVICE}/v1/oauth/google/callback",
            "ALLOWED_RETURN_ORIGINS": "http://localhost:3000,http://127.0.0.1:8000",
            "PUBSUB_TOPIC": TOPIC,
            "PUBSUB_PUSH_AUDIENCE": f"{SERVICE}/v1/webhooks/gmail",
            "PUBSUB_PUSH_SERVICE_ACCOUNT": "gmail-push@sandbox.iam.gserviceaccount.com",
            "DEFAULT_SMTP_URL": f"smtp://127.0.0.1:{SANDBOX_SMTP_PORT}",
            "DEFAULT_FROM_ADDRESS": "crm@leadmail.example",
        }
    )
    return env


def start_pubsub_emulator(env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """`make run PUBSUB_EMULATOR=1`: Gmail -> Google's Pub/Sub emulator -> streaming pull.

    The sandbox then publishes to the emulator instead of pushing (it reads
    PUBSUB_EMULATOR_HOST), and the service pulls from SUBSCRIPTION: the production shape.
    """
    if os.environ.get("PUBSUB_EMULATOR", "").lower() not in {"1", "true", "yes", "on"}:
        return None
    try:
        process = start_emulator(PUBSUB_EMULATOR_PORT, (VAR / "pubsub-emulator.log").open("wb"))
    except EmulatorUnavailable as exc:
        print(f"make run: {exc}; the sandbox pushes by itself instead", flush=True)
        return None
    env["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{PUBSUB_EMULATOR_PORT}"
    env["PUBSUB_SUBSCRIPTION"] = SUBSCRIPTION
    setup = ["pubsub", "setup", "--topic", TOPIC, "--subscription", SUBSCRIPTION, "--pull"]
    subprocess.run([sys.executable, "-m", "app", *setup], cwd=ROOT, env=env, check=True)
    return process


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"make run: {url} did not come up")


def seed_sandbox() -> None:
    for email, name in ((REP, "Riley Rep"), (CUSTOMER, "Casey Customer")):
        httpx.post(f"{SANDBOX}/_sandbox/accounts", json={"email": email, "name": name}, timeout=5)


def demo_token(secret: str) -> str:
    claims: dict[str, Any] = {
        "sub": USER,
        "org": ORG,
        "email": REP,
        "name": "Riley Rep",
        "exp": int(time.time()) + 30 * 86400,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def banner(token: str, secrets: dict[str, str]) -> str:
    auth = '-H "Authorization: Bearer $TOKEN"'
    return f"""
leadmail is running.
  service   {SERVICE}   (API docs: {SERVICE}/docs)
  sandbox   {SANDBOX}   (a local Google; SMTP on 127.0.0.1:{SANDBOX_SMTP_PORT})
  demo org  {ORG}, user {USER}; sandbox accounts {REP} (rep) and {CUSTOMER} (customer)

Development secrets (generated once, kept in {VAR / "dev-secrets.json"}):
  API_JWT_SECRET={secrets["API_JWT_SECRET"]}
  TOKEN_ENCRYPTION_KEYS={secrets["TOKEN_ENCRYPTION_KEYS"]}

Bearer token (valid 30 days):
  export TOKEN={token}

1. Link the rep's Gmail: ask for a consent URL, open it in a browser and press Allow
   (you land on {SERVICE}/docs?status=connected&mailbox_id=...):
  curl -s -X POST {SERVICE}/v1/mailboxes/connect {auth} \\
       -H 'Content-Type: application/json' -d '{{"return_url": "{SERVICE}/docs"}}'
   No browser? Let the sandbox consent by itself, then follow the URL with curl:
  curl -s -X PUT {SANDBOX}/_sandbox/consent -H 'Content-Type: application/json' \\
       -d '{{"auto": true}}'
  curl -sL -o /dev/null -w '%{{url_effective}}\\n' "<authorization_url>"

2. Send to a lead from the rep's Gmail:
  curl -s -X POST {SERVICE}/v1/leads/lead-1/messages {auth} -H 'Content-Type: application/json' \\
       -d '{{"to": ["{CUSTOMER}"], "subject": "Hello", "body_text": "Hi Casey!"}}'

3. Let the customer reply to it, naming the rfc822_message_id that step 2 returned
   (the sandbox pushes a notification; the reply lands on the lead within moments):
  curl -s -X POST {SANDBOX}/_sandbox/accounts/{CUSTOMER}/reply \\
       -H 'Content-Type: application/json' \\
       -d '{{"message_id": "<paste rfc822_message_id>", "text": "Thanks, sounds good."}}'

4. Read the conversation on the lead:
  curl -s {SERVICE}/v1/leads/lead-1/threads {auth}

The full walkthrough is in README.md ("Try it with curl"). Ctrl-C stops both processes.
"""


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # A terminal's Ctrl-C reaches the whole process group; `kill` or a supervisor
    # sends SIGTERM to this process only, and both must stop the children too.
    signal.signal(signal.SIGTERM, _stop)
    VAR.mkdir(exist_ok=True)
    secrets = dev_secrets()
    env = service_env(secrets)
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env, check=True
    )
    emulator = start_pubsub_emulator(env)
    sandbox_cmd = [
        sys.executable,
        "-m",
        "sandbox",
        "--port",
        str(SANDBOX_PORT),
        "--smtp-port",
        str(SANDBOX_SMTP_PORT),
        "--push-endpoint",
        f"{SERVICE}/v1/webhooks/gmail",
        "--push-service-account",
        "gmail-push@sandbox.iam.gserviceaccount.com",
    ]
    service_cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
    ]
    processes = [
        subprocess.Popen(sandbox_cmd, cwd=ROOT, env=env),
        subprocess.Popen(service_cmd, cwd=ROOT, env=env),
    ]
    try:
        wait_for(f"{SANDBOX}/oauth2/v1/certs")
        wait_for(f"{SERVICE}/healthz")
        seed_sandbox()
        print(banner(demo_token(secrets["API_JWT_SECRET"]), secrets), flush=True)
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in processes:
            if process.poll() is None:
                # SIGTERM, not SIGINT: after Ctrl-C the children already had one SIGINT
                # from the terminal, and uvicorn takes a second as "exit now", skipping
                # the lifespan shutdown (duties, sync, engine).
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if emulator is not None:
            stop_emulator(emulator)


if __name__ == "__main__":
    sys.exit(main())
