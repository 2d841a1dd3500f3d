"""`uvicorn app.main:app` without its required settings: one clear line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in {"API_JWT_SECRET", "TOKEN_ENCRYPTION_KEYS"}
    }
    return subprocess.run(
        [sys.executable, "-c", "import app.main; app.main.app"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode()}, "API_JWT_SECRET"),
        ({"API_JWT_SECRET": "s" * 40}, "TOKEN_ENCRYPTION_KEYS"),
        ({}, "API_JWT_SECRET, TOKEN_ENCRYPTION_KEYS"),
    ],
)
def test_a_missing_secret_stops_start_up_with_one_line_naming_it(
    env: dict[str, str], named: str
) -> None:
    done = _start(env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"leadmail: cannot start: set {named} in the environment"
    ]


def test_a_malformed_encryption_key_is_named_but_not_printed() -> None:
    good = Fernet.generate_key().decode()
    done = _start({"API_JWT_SECRET": "s" * 40, "TOKEN_ENCRYPTION_KEYS": f"{good},not-a-key-xyz"})
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("leadmail: cannot start: set TOKEN_ENCRYPTION_KEYS (")
    assert "key 2 is not a Fernet key" in line
    assert "not-a-key-xyz" not in line and good not in line
