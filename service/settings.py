"""One settings class, read from the environment (prefix OKR_) or `.env`."""

from __future__ import annotations

import secrets
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("okr-service", appauthor=False))


class Settings(BaseSettings):
    # A refused value is never echoed in the error (it may be a password or a secret).
    model_config = SettingsConfigDict(
        env_prefix="OKR_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    env: Literal["development", "production"] = "development"
    # Unset: an embedded PostgreSQL under `data_dir` is started and used.
    database_url: SecretStr | None = None  # it may carry the password
    data_dir: Path = Field(default_factory=_default_data_dir)
    # Beyond one machine (README, "Operating it"): OKR_DATABASE_URL may name a connection
    # pooler, and then what needs a session of its own (the event listener's LISTEN,
    # migrations under their session-level advisory lock) connects here instead: to
    # PostgreSQL itself. Unset: OKR_DATABASE_URL serves for both.
    database_direct_url: SecretStr | None = None
    # "pgbouncer": OKR_DATABASE_URL is PgBouncer in transaction mode, so no connection
    # keeps session state from one transaction to the next: no startup parameters but
    # the ones PgBouncer tracks, and prepared statements only when
    # database_prepared_statements says the pooler tracks them.
    database_pooler: Literal["none", "pgbouncer"] = "none"
    # Named prepared statements (asyncpg's statement cache). None: on without a pooler,
    # off behind PgBouncer (1.18, which Debian ships, does not track them); true behind
    # PgBouncer 1.21 or later with max_prepared_statements > 0.
    database_prepared_statements: bool | None = None
    # Unset: generated once and kept beside the embedded database.
    jwt_secret: SecretStr | None = None
    jwt_ttl_days: int = 30
    pool_size: int = 10
    # Outages (service/outage.py): no request waits on the database longer than these.
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    db_statement_timeout_seconds: float = Field(default=15.0, gt=0)
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)

    # Subscriptions: a subscriber whose queue fills is closed with its cursor.
    subscriber_queue_size: int = 1000
    event_poll_seconds: float = 5.0
    listener_health_seconds: float = 2.0

    # Limits, checked before any resolver runs.
    max_page_size: int = 100
    default_page_size: int = 20
    max_query_depth: int = 12
    max_query_tokens: int = 2000
    max_aliases: int = 30
    max_query_cost: int = 25_000
    max_body_bytes: int = 1_000_000
    max_subscriptions_per_connection: int = 20
    # WebSockets: a socket that sends no connection_init within this long is closed
    # (both subprotocols); a message larger than max_body_bytes closes it too.
    ws_init_timeout_seconds: float = 10.0

    # When set, GET /metrics requires `Authorization: Bearer <metrics_token>`.
    metrics_token: SecretStr | None = None

    # Browsers (CORS): the origins allowed to call /graphql, comma-separated
    # (e.g. `https://app.example.com,https://admin.example.com`); none by default.
    # `okr serve --demo` also allows http://localhost:* and http://127.0.0.1:*.
    cors_origins: Annotated[list[str], NoDecode] = []
    cors_localhost: bool = False

    # Apollo's automatic persisted queries: query texts kept per process (0: none kept,
    # so every hash-only request is answered PersistedQueryNotFound).
    persisted_queries_size: int = Field(default=1000, ge=0)

    # Requests per minute per API key and per user, per process (0: no limit).
    rate_limit_per_minute: int = Field(default=0, ge=0)

    # Limits checked while a response is built (per event for subscriptions): objects
    # in it, seconds spent, and bytes of its JSON. Past one, the request ends in an error.
    max_response_objects: int = 50_000
    execution_deadline_seconds: float = 10.0
    max_response_bytes: int = 10_000_000

    # Metrics: each measurement becomes a check-in on every key result bound to its
    # metric. A metric feeds at most this many key results (in cycles not CLOSED; a bind
    # past it is refused), and a recordMeasurements batch that would write more
    # check-ins than this is refused whole, before anything is written.
    max_key_results_per_metric: int = Field(default=25, ge=1)
    max_batch_check_ins: int = Field(default=10_000, ge=1)

    # How often a replica looks for overdue check-ins (0: never); one replica writes.
    check_in_reminder_seconds: float = 300.0

    # Jobs (service/jobs.py): how often a process looks for due jobs, how long a taken
    # job is its own before another process may take it again, how many run at once.
    job_poll_seconds: float = Field(default=1.0, gt=0)
    job_lease_seconds: float = Field(default=60.0, gt=0)
    job_concurrency: int = Field(default=10, ge=1)

    # Outbound requests (webhooks, metric sources; service/outbound.py). Private,
    # loopback and link-local targets: None means allowed in development only.
    webhook_allow_private: bool | None = None
    webhook_retry_base_seconds: float = Field(default=30.0, gt=0)
    # An endpoint whose attempts have all failed this long is disabled.
    webhook_disable_after_seconds: float = Field(default=3 * 86400.0, gt=0)
    outbound_timeout_seconds: float = Field(default=10.0, gt=0)
    outbound_max_bytes: int = Field(default=1_000_000, ge=1024)
    # Encrypts webhook secrets and source headers at rest (service/secrets.py). Unset:
    # generated once and kept beside the embedded database (development only).
    secrets_key: SecretStr | None = None

    # The OKR facts' clock (service/clock.py) reads this instant when the process starts
    # and flows from there; unset, it is the wall clock (`okr serve --demo`: the demo's).
    clock_start: datetime | None = None

    # Query results are cached per caller until the organization's next write, and at
    # most this long (0 turns the cache off).
    response_cache_seconds: float = 1.0
    response_cache_size: int = 2000
    response_cache_bytes: int = 64_000_000  # the JSON of all cached results, at most

    # None: on in development, off in production.
    graphiql: bool | None = None
    introspection: bool | None = None
    # Serve the schema as an Apollo Federation subgraph (`_service { sdl }`, `_entities`,
    # `_Any`); off, clients' introspection has nothing of federation.
    federation: bool = False

    # Tokens from a company's identity provider (RS256/ES256), beside our own HS256.
    jwt_public_key: str | None = None  # a PEM key, or the path of one
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: list[str] = ["RS256", "ES256"]
    jwt_org_claim: str = "org"  # names the organization by slug
    jwt_default_org: str | None = None  # the slug used when the claim is absent
    jwt_create_users: bool = False  # unknown users: refused, or created as MEMBER

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [o.strip() for o in value.split(",") if o.strip()]
        if isinstance(value, list):
            for origin in value:
                if not isinstance(origin, str) or (
                    origin != "*" and not origin.startswith(("http://", "https://"))
                ):
                    raise ValueError("OKR_CORS_ORIGINS: each origin is http(s)://host[:port], or *")
            return [o.rstrip("/") for o in value]
        return value

    @model_validator(mode="after")
    def _direct_url_beside_a_pooler(self) -> Settings:
        if self.database_direct_url is not None and self.database_url is None:
            raise ValueError("OKR_DATABASE_DIRECT_URL is set but OKR_DATABASE_URL is not")
        if self.database_pooler != "none" and self.database_direct_url is None:
            raise ValueError(
                "OKR_DATABASE_POOLER needs OKR_DATABASE_DIRECT_URL (the event listener and "
                "migrations need a session of their own, which a pooler in transaction "
                "mode does not give)"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production":
            if self.database_url is None:
                raise ValueError("OKR_DATABASE_URL must be set when OKR_ENV=production")
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            if len(secret) < 32:
                raise ValueError(
                    "OKR_JWT_SECRET of at least 32 characters is required in production"
                )
        return self

    @property
    def graphiql_enabled(self) -> bool:
        return self.graphiql if self.graphiql is not None else self.env != "production"

    @property
    def introspection_enabled(self) -> bool:
        return self.introspection if self.introspection is not None else self.env != "production"

    @property
    def external_tokens(self) -> bool:
        return bool(self.jwt_public_key or self.jwks_url)

    @property
    def private_targets_allowed(self) -> bool:
        if self.webhook_allow_private is not None:
            return self.webhook_allow_private
        return self.env != "production"

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def resolved_jwt_secret(self) -> str:
        """The configured secret, or one generated once and kept in the data folder."""
        if self.jwt_secret:
            return self.jwt_secret.get_secret_value()
        path = self.data_dir / "jwt_secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def resolved_secrets_key(self) -> str:
        """The configured key, or (development) one generated once and kept in the data
        folder. Production without one refuses to store or read any secret."""
        if self.secrets_key:
            return self.secrets_key.get_secret_value()
        if self.env == "production":
            raise RuntimeError("OKR_SECRETS_KEY must be set in production to keep secrets")
        path = self.data_dir / "secrets_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()


def _accepts(annotation: Any) -> str:
    """What a setting of this type accepts, in words."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is Annotated:
        return _accepts(args[0])
    if args and type(None) in args:  # Optional: unset, or the inner type
        inner = [a for a in args if a is not type(None)]
        return _accepts(inner[0]) if len(inner) == 1 else "a value"
    if origin is list:
        return "a comma-separated list"
    return {
        int: "a whole number",
        float: "a number",
        bool: "true or false (also 1/0, yes/no, on/off)",
        Path: "a path",
        SecretStr: "a text (kept secret)",
        str: "a text",
    }.get(annotation, "a value")


def describe_refusal(exc: ValidationError) -> str:
    """A refused setting as an operator reads it: each environment variable's name, what
    it accepts and why its value was refused (never the value: it may be a secret), with
    no pointer to pydantic's documentation."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        location = error.get("loc") or ()
        field = Settings.model_fields.get(str(location[0])) if location else None
        if field is None:  # a rule over several settings: its message names them
            lines.append(message)
            continue
        name = f"OKR_{str(location[0]).upper()}"
        if message.startswith(name):
            lines.append(message)  # a validator of ours: it names the setting itself
            continue
        lines.append(f"{name} takes {_accepts(field.annotation)}; refused: {message}")
    return "\n".join(lines)


@lru_cache
def get_settings() -> Settings:
    return Settings()
