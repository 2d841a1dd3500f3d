"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams.

httpx costs more CPU per request than the servers measured here; this client only
writes prepared request bytes and reads status lines and bodies, so the figure is the
server's rather than the client's.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def post_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def run_load(
    host: str, port: int, requests: Sequence[bytes], *, concurrency: int = 32
) -> LoadResult:
    """Send every prepared request once over `concurrency` keep-alive connections."""
    statuses: dict[int, int] = {}
    position = 0

    async def worker() -> None:
        nonlocal position
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while position < len(requests):
                request = requests[position]
                position += 1
                writer.write(request)
                status = await _read_response(reader)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(len(requests), time.perf_counter() - started, statuses)


WRK_SCRIPT = r"""
local bodies = {}
local position = 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  position = math.random(#bodies)
end
function request()
  position = position % #bodies + 1
  return wrk.format("POST", os.getenv("BENCH_PATH"), {
    ["Content-Type"] = "application/json",
    ["Authorization"] = os.getenv("BENCH_AUTH"),
  }, bodies[position])
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    path: str,
    bodies: Sequence[bytes],
    authorization: str,
    *,
    seconds: float,
    connections: int = 32,
    workdir: Path,
) -> LoadResult:
    """The same load with wrk (one thread), which costs the machine less CPU per request
    than any Python client."""
    script = workdir / "push.lua"
    script.write_text(WRK_SCRIPT)
    data = workdir / "bodies.txt"
    data.write_bytes(b"\n".join(bodies))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(int(seconds), 1)}s"]
    out = subprocess.run(
        [*command, "-s", str(script), url, "--", str(data)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_PATH": path, "BENCH_AUTH": authorization},
    )
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out.stdout)
    if done is None:
        raise RuntimeError(f"unexpected wrk output: {out.stdout}")
    elapsed = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    errors = int(failed.group(1)) if failed else 0
    requests = int(done.group(1))
    return LoadResult(
        requests, elapsed, {204: requests - errors, 0: errors} if errors else {204: requests}
    )
