"""The yardstick for push intake: a bare FastAPI endpoint taking the same JSON POST.

It reads and parses the body and answers 204, nothing else; the intake's figure is a
ratio to this one, served by the same uvicorn with the same options.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/v1/webhooks/gmail", status_code=204)
async def receive(request: Request) -> Response:
    await request.json()
    return Response(status_code=204)
