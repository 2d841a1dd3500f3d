"""The ASGI application: `uvicorn app.main:app`."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import ValidationError

from app import health
from app.config import Settings
from app.crypto import TokenCipher
from app.db import create_engine, create_sessionmaker
from app.duties import Duties
from app.errors import install_error_handlers
from app.mailboxes.access import MailboxAccess
from app.mailboxes.router import router as mailboxes_router
from app.observability import RequestContextMiddleware, configure_logging
from app.pubsub.runtime import pull_runtime
from app.sending.lifespan import sending_lifespan
from app.sending.router import router as sending_router
from app.sync.router import router as webhook_router
from app.sync.runtime import sync_runtime
from app.templates.router import router as templates_router
from app.threads.router import router as threads_router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings_or_exit()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=10.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        app.state.mailbox_access = MailboxAccess(
            settings,
            app.state.http,
            app.state.sessionmaker,
            TokenCipher(settings.token_encryption_keys),
        )
        app.state.duties = Duties(settings, app.state.sessionmaker, app.state.mailbox_access)
        if settings.background_duties:
            app.state.duties.start()
        try:
            async with sync_runtime(app), pull_runtime(app), sending_lifespan(app):
                # What exists now (modules, the ORM's and Google's libraries) lives as
                # long as the process; freezing it keeps the cyclic GC from scanning
                # those ~150k objects again and again under load.
                gc.freeze()
                yield
        finally:
            await app.state.duties.stop()
            await app.state.mailbox_access.aclose()
            await app.state.http.aclose()
            await engine.dispose()

    app = FastAPI(
        title="leadmail",
        version="0.1.0",
        summary="Send to leads from the rep's own Gmail and sync their replies back.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.migration_heads = health.migration_heads()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    # First after health: the push webhook is the hot path, and routes match in order.
    app.include_router(webhook_router)
    app.include_router(mailboxes_router)
    app.include_router(templates_router)
    app.include_router(sending_router)
    app.include_router(threads_router)
    return app


def load_settings_or_exit() -> Settings:
    """Settings from the environment, or one clear line naming what is missing."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"][:1]).upper()
            problems.append(f"{name} ({error['msg']})" if error["type"] != "missing" else name)
        missing = ", ".join(problems)
        print(f"leadmail: cannot start: set {missing} in the environment", file=sys.stderr)
        raise SystemExit(2) from None


def __getattr__(name: str) -> Any:
    # `uvicorn app.main:app` asks for this attribute; building it lazily keeps
    # `import app.main` free of side effects for tests and tools.
    if name == "app":
        settings = load_settings_or_exit()
        configure_logging(settings.log_level)
        application = create_app(settings)
        globals()["app"] = application
        return application
    raise AttributeError(name)
