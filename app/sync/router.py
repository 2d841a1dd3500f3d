from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.errors import problem_responses
from app.sync.webhook import PushReceiver

router = APIRouter(tags=["webhooks"])


@router.post(
    "/v1/webhooks/gmail",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 503),
    summary="Gmail notifications pushed by Cloud Pub/Sub (wrapped or unwrapped)",
)
async def receive_gmail_push(request: Request) -> Response:
    # Headers and query read directly: declared parameters would cost the hot path
    # FastAPI's per-parameter validation for two optional strings.
    receiver: PushReceiver = request.app.state.push_receiver
    await receiver.receive(
        authorization=request.headers.get("authorization"),
        query_token=request.query_params.get("token"),
        body=await request.body(),
        headers=request.headers,
    )
    # 204 for every accepted push, including those with nothing to do: a 4xx would only
    # make Pub/Sub redeliver something that can never succeed.
    return Response(status_code=204)
