"""Settings read from the environment, named exactly as in the public contract."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    database_url: str = "sqlite+aiosqlite:///./var/leadmail.db"
    api_jwt_secret: SecretStr
    token_encryption_keys: Annotated[list[SecretStr], NoDecode]

    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_auth_uri: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_uri: str = "https://oauth2.googleapis.com/token"
    google_revoke_uri: str = "https://oauth2.googleapis.com/revoke"
    google_certs_uri: str = "https://www.googleapis.com/oauth2/v1/certs"
    gmail_api_base_url: str = "https://gmail.googleapis.com"
    oauth_redirect_uri: str = "http://localhost:8000/v1/oauth/google/callback"
    allowed_return_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000"]
    )

    pubsub_topic: str | None = None
    pubsub_push_audience: str | None = None
    pubsub_push_service_account: str | None = None
    pubsub_subscription: str | None = None
    pubsub_push_token: SecretStr | None = None
    match_replies_by_references: bool = False

    default_smtp_url: str | None = None
    default_from_address: str | None = None

    # Not in the contract's table: operational knobs with safe defaults.
    background_duties: bool = True
    safety_sync_after_seconds: float = 900.0
    watch_renew_after_seconds: float = 86400.0
    duty_interval_seconds: float = 30.0
    sync_poll_interval_seconds: float = 2.0
    log_level: str = "INFO"
    # Sending: Gmail 429/403-rate-limit/5xx on send are retried up to `send_max_attempts`
    # times in all, waiting at most `send_retry_budget_seconds` in total (a Retry-After
    # further out than that fails the send at once); a row still `queued` after
    # `send_stale_after_seconds` was interrupted and is reconciled against Gmail.
    send_max_attempts: int = Field(default=4, ge=1)
    send_retry_base_seconds: float = Field(default=1.0, ge=0)
    send_retry_budget_seconds: float = Field(default=20.0, ge=0)
    send_stale_after_seconds: float = Field(default=300.0, gt=0)
    send_reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("token_encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_return_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @field_validator("token_encryption_keys")
    @classmethod
    def _require_a_key(cls, value: list[SecretStr]) -> list[SecretStr]:
        if not value:
            raise ValueError("at least one Fernet key is required")
        for position, key in enumerate(value, start=1):
            try:
                Fernet(key.get_secret_value())
            except (ValueError, TypeError):
                # The key itself stays out of the message: this line goes to the log.
                raise ValueError(
                    f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
