from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.testing import RunningSandbox, run_sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[RunningSandbox]:
    with run_sandbox(auto_consent=True) as google:
        yield google
