"""Gateway settings, read from `TOLLGATE_*` environment variables.

The gateway's settings hold the parts it uses, each reading its own variables: the registry's
(`registry`), the Triton server's (`triton`) and the engine's (`engine`, written into the
model configurations its reconciler loads). One `.env` describes a whole deployment. Outside
local mode the gateway refuses to start with the built-in development secret or a short one.
"""

from __future__ import annotations

import ipaddress
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hosting.config import EngineSettings, HostingSettings, TritonSettings
from registry.config import RegistrySettings

DEVELOPMENT_SECRET = "tollgate-local-development-secret-change-me"  # noqa: S105 (refused outside local)
MIN_SECRET_LENGTH = 32


class GatewaySettings(BaseSettings):
    """The HTTP API in front of the workers."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="forbid")

    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)

    mode: Literal["local", "production"] = Field(
        default="local", description="local allows the development JWT secret; production not."
    )
    host: str = Field(default="127.0.0.1", description="Address the gateway binds.")
    port: int = Field(default=8080, ge=1, le=65535, description="Gateway HTTP port.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Gateway log level (JSON lines on stderr)."
    )
    default_model: str = Field(
        default="code-gpt", description="Model used when a request names none."
    )

    jwt_secret: str = Field(
        default=DEVELOPMENT_SECRET,
        description="HS256 key that signs and verifies local access tokens (32+ characters).",
    )
    jwt_issuer: str = Field(default="tollgate", description="`iss` of local access tokens.")
    jwt_audience: str = Field(default="tollgate", description="`aud` every token must carry.")
    jwt_ttl_s: int = Field(
        default=900, ge=30, le=900, description="Lifetime of issued tokens (at most 15 minutes)."
    )
    jwt_leeway_s: int = Field(
        default=30, ge=0, le=120, description="Clock skew allowed when checking exp/iat/nbf."
    )
    jwks_url: str = Field(
        default="", description="JWKS URL of an external identity provider; empty: none."
    )
    jwks_issuer: str = Field(
        default="",
        description="`iss` every external provider's token must carry; required with jwks_url.",
    )
    jwks_algorithms: list[str] = Field(
        default=["RS256", "ES256"], description="Algorithms accepted from the external provider."
    )
    jwks_cache_s: float = Field(
        default=300.0, gt=0, description="How long fetched JWKS keys are trusted."
    )

    redis_url: str = Field(
        default="", description="Redis for shared rate limits and the response cache; empty: none."
    )
    reconcile_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="How often every Triton endpoint is checked against the versions the "
        "registry needs (loading and unloading to match); 0 turns the reconciler off.",
    )
    model_load_timeout_s: float = Field(
        default=300.0, gt=0, description="How long loading a model version on Triton may take."
    )
    unload_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="How long a version stays loaded after no alias names it (other gateway "
        "replicas may still route to it until they next read the registry).",
    )
    canary_window_s: float = Field(
        default=60.0, gt=0, description="Canary gates: the window of traffic judged."
    )
    canary_min_requests: int = Field(
        default=20, ge=1, description="Canary gates: fewer samples than this is inconclusive."
    )
    canary_max_error_rate: float = Field(
        default=0.05, ge=0, le=1, description="Canary gates: the highest error rate that passes."
    )
    canary_max_latency_ratio: float = Field(
        default=2.0,
        gt=1,
        description="Canary gates: the highest ratio of the canary's median time to first "
        "token (or inter-token latency) to production's that passes.",
    )
    canary_check_interval_s: float = Field(
        default=2.0, ge=0, description="How often canaries are judged; 0 turns the gates off."
    )
    canary_gates: dict[str, dict[str, float]] = Field(
        default={},
        description="Per-model gate settings overriding the above, e.g. "
        '{"code-gpt": {"window_s": 120, "max_error_rate": 0.01}}.',
    )
    drift_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="How often prompt lengths are compared with the training data; 0: never.",
    )
    otlp_endpoint: str = Field(
        default="",
        description="OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); empty: "
        "no tracing.",
    )
    otel_service_name: str = Field(
        default="tollgate-gateway", description="The service name on exported spans."
    )
    redis_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="How long one Redis call may take before it counts as a Redis failure.",
    )
    rate_limit_fail_open: bool = Field(
        default=True,
        description="When Redis fails: true falls back to in-process buckets, false refuses (503).",
    )
    rate_requests_capacity: int = Field(
        default=60, ge=1, description="Default burst of requests per key."
    )
    rate_requests_per_s: float = Field(
        default=1.0, gt=0, description="Default request refill rate per key (per second)."
    )
    rate_tokens_capacity: int = Field(
        default=20000, ge=1, description="Default burst of generated tokens per key."
    )
    rate_tokens_per_s: float = Field(
        default=200.0, gt=0, description="Default generated-token refill rate per key."
    )

    triton_endpoints: list[str] = Field(
        default=[],
        description="Triton gRPC endpoints (host:port); empty: the local Triton's "
        "TOLLGATE_TRITON_HOST:TOLLGATE_TRITON_GRPC_PORT.",
    )
    request_timeout_s: float = Field(
        default=60.0, gt=0, description="Deadline for one generation, first byte to last."
    )
    health_interval_s: float = Field(
        default=2.0, gt=0, description="How often each Triton endpoint's readiness is checked."
    )
    route_refresh_s: float = Field(
        default=2.0, gt=0, le=2.0, description="How often the routing table is re-read."
    )
    max_prompt_chars: int = Field(
        default=16000, ge=1, description="Longest prompt accepted, in characters."
    )
    max_body_bytes: int = Field(
        default=262144, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    deny_patterns: list[str] = Field(
        default=[], description="Regular expressions a prompt must not match (400 when it does)."
    )
    cache_ttl_s: int = Field(
        default=300, ge=0, description="Response cache lifetime in Redis; 0 turns caching off."
    )

    v1_deprecated_at: date | None = Field(
        default=None, description="When /v1/generate was deprecated (Deprecation header)."
    )
    v1_sunset: date | None = Field(
        default=None, description="When /v1/generate stops working (Sunset header)."
    )

    @field_validator("v1_deprecated_at", "v1_sunset", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _pin_the_identity_provider(self) -> GatewaySettings:
        # A provider's signing keys may sign tokens for others too (a shared or multi-tenant
        # provider); only its issuer, with our audience, says a token was meant for us.
        if self.jwks_url and not self.jwks_issuer:
            raise ValueError("TOLLGATE_JWKS_ISSUER must be set when TOLLGATE_JWKS_URL is")
        return self

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> GatewaySettings:
        if not self.jwt_secret:  # unset: the development secret, which only local mode accepts
            self.jwt_secret = DEVELOPMENT_SECRET
        if self.mode != "local" and (
            self.jwt_secret == DEVELOPMENT_SECRET or len(self.jwt_secret) < MIN_SECRET_LENGTH
        ):
            raise ValueError(
                "TOLLGATE_JWT_SECRET must be set to a random string of at least "
                f"{MIN_SECRET_LENGTH} characters outside local mode"
            )
        if self.jwt_secret == DEVELOPMENT_SECRET and not _loopback(self.host):
            # The development secret is public: anyone who can reach the port could sign
            # admin tokens. Local mode with it is for this machine only.
            raise ValueError(
                f"TOLLGATE_HOST={self.host} reaches beyond this machine, and the JWT secret is "
                "the public development one: set TOLLGATE_JWT_SECRET, or bind 127.0.0.1"
            )
        return self

    @property
    def endpoints(self) -> list[str]:
        return self.triton_endpoints or [f"{self.triton.host}:{self.triton.grpc_port}"]

    @property
    def triton_path(self) -> Path:
        """Where the local tritonserver is unpacked and logs (`TOLLGATE_TRITON_HOME`)."""
        return self.triton.home_in(self.registry.var_dir)

    @property
    def hosting(self) -> HostingSettings:
        """The parts a local Triton is started and configured with (`python -m gateway run`)."""
        return HostingSettings(registry=self.registry, triton=self.triton, engine=self.engine)


def _loopback(host: str) -> bool:
    """Whether `host` (an address or name the gateway binds) stays on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere
