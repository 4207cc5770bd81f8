"""The HTTP API (FastAPI): predictions, online features, models, drift, alerts, health, metrics.

`create_app` gets everything it reads through `ApiDeps`, built by the composition root
(`driftline.wiring.build_api`), so this module knows neither Kafka, the worker nor the feature
store: the registry and the features reader are small protocols (`ModelSource`, `FeatureReader`)
that `inference.registry.ModelRegistry` and `feature_store.online.OnlineStore` satisfy.

``POST /predict`` scores one event like the worker would: the same canary routing
(`inference.routing.route`), the model inputs the request does not carry (windowed aggregates)
taken from the entity's latest online features, the request's values winning. Unlike the worker
it writes nothing: the request is not an event, so the aggregates are the entity's as of its
newest event, without the request itself.

Every error is ``{"error": {"code": ..., "message": ..., "field": ...}}`` (``field``: the
request field at fault, or null), 500s included (logged, never a stack trace). No body carries an
exception's text (a Redis error, a failed check: the cause goes to the log). With a token,
every route but ``/healthz``, ``/readyz`` and the OpenAPI docs needs ``Authorization: Bearer``.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import redis
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
)
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.contract import EXPECTED, FeatureValue, describe_value, kind_of
from inference.metadata import (
    Deployment,
    FeatureSpec,
    ModelEvent,
    ModelName,
    ModelVersion,
    TrainingInfo,
    check_model_name,
)
from inference.routing import CANARY, route
from inference.session import ModelIntegrityError, ModelSession

log = logging.getLogger("driftline.api")

# Strict, as in the event contract: "1" stays a string, true is not 1, NaN/infinity are refused.


class ModelSource(Protocol):
    """What the API reads of the model registry (`inference.registry.ModelRegistry`)."""

    def names(self) -> list[str]: ...

    def deployment(self, name: str) -> Deployment: ...

    def versions(self, name: str) -> list[ModelVersion]: ...

    def history(self, name: str) -> list[ModelEvent]: ...

    def load(self, name: str, version: int | None = None) -> tuple[ModelVersion, ModelSession]: ...


class EntityRecord(Protocol):
    """One entity's latest features (`feature_store.online.EntityFeatures`)."""

    @property
    def view(self) -> str: ...

    @property
    def as_of(self) -> datetime: ...

    @property
    def updated_at(self) -> datetime: ...

    @property
    def events(self) -> int: ...

    @property
    def values(self) -> Mapping[str, float | str | None]: ...


class FeatureReader(Protocol):
    """The online feature store, read-only (`feature_store.online.OnlineStore`)."""

    def describe(self, entity_id: str) -> EntityRecord | None: ...


class DriftStat(BaseModel):
    """The latest closed-window statistic of one detector on one feature of one model version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    version: int
    detector: str
    feature: str
    statistic: float
    threshold: float
    p_value: float | None = None
    window_end_ts: float
    window_end_index: int
    n_window: int
    window_start_ts: float | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def above_threshold(self) -> bool:
        return self.statistic >= self.threshold


# Module level: FastAPI resolves the (string) annotations of the routes in this module's globals.
_BEARER = HTTPBearer(auto_error=False, description="The API token (DRIFTLINE_API_TOKEN).")

Alerts = Callable[[float | None, str | None], list[dict[str, Any]]]
Incidents = Callable[[], list[dict[str, Any]]]
"""Every incident's latest state (`detectors.incidents.DriftIncident` as JSON), in any order."""


@dataclass(frozen=True)
class ApiDeps:
    """Everything the API reads, injected. ``checks``: name -> callable that returns True when the
    dependency answers (False or an exception: not ready); it must return quickly."""

    registry: ModelSource
    features: FeatureReader | None
    drift: Callable[[], list[DriftStat]]
    alerts: Alerts
    checks: Mapping[str, Callable[[], bool]]
    prometheus: CollectorRegistry
    token: str | None = None
    max_body_bytes: int = 65536
    model: str = "fraud"
    session_cache: int = 8  # loaded ONNX sessions kept (by version and sha256)
    # The reader of a version's own feature view (None: the version uses no view); when unset,
    # `features` serves every version.
    features_of: Callable[[ModelVersion], FeatureReader | None] | None = None
    incidents: Incidents | None = None
    # Told of every Redis error a request met (the composition root logs one line per outage and
    # keeps the dependency gauge); None: each error is logged.
    redis_down: Callable[[Exception], None] | None = None
    retry_after_seconds: int = 5  # the Retry-After of a 503 while a dependency is away


# -- request / response models ---------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity_id: str = Field(min_length=1)
    features: dict[str, FeatureValue] = Field(default_factory=dict)
    model: ModelName | None = None


class PredictResponse(_Out):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    score: float
    class_: int = Field(alias="class")
    model: str
    version: int
    arm: Literal["production", "canary"]
    features: dict[str, float | int | str | None]


class EntityFeaturesOut(_Out):
    entity_id: str
    view: str
    as_of: datetime
    updated_at: datetime
    events: int
    values: dict[str, float | str | None]


class DeploymentOut(_Out):
    name: str
    production: int | None
    canary: int | None
    canary_fraction: float
    shadow: int | None


class ModelsOut(_Out):
    models: list[DeploymentOut]


class VersionOut(_Out):
    """A version without its reference samples (thousands of numbers per feature)."""

    version: int
    stage: str
    sha256: str
    created_at: datetime
    canary_fraction: float | None
    threshold: float
    features: list[FeatureSpec]
    training: TrainingInfo | None


class ModelOut(_Out):
    name: str
    deployment: DeploymentOut
    versions: list[VersionOut]
    history: list[ModelEvent]


class DriftOut(_Out):
    stats: list[DriftStat]


class AlertsOut(_Out):
    alerts: list[dict[str, Any]]


class IncidentsOut(_Out):
    incidents: list[dict[str, Any]]


class HealthOut(_Out):
    status: Literal["ok"]


class ReadyOut(_Out):
    status: Literal["ready"]
    checks: dict[str, str]


# -- errors --------------------------------------------------------------------------------------


class ApiError(Exception):
    """An expected failure, answered as ``{"error": {...}}`` with this status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers, self.extra = headers, extra


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}, **extra}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _field_of(loc: Sequence[int | str]) -> str | None:
    """Validation error location -> the request field: ``("body", "features", "amount", "int")``
    -> ``features.amount`` (union members and the body/query/path part dropped)."""
    parts = (
        [str(p) for p in loc[1:]]
        if loc and loc[0] in ("body", "query", "path", "header")
        else list(map(str, loc))
    )
    if parts[:1] == ["features"] and len(parts) > 2:
        parts = parts[:2]
    return ".".join(parts) or None


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if not errors:
        return error_response(422, "invalid_request", "invalid request")
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return error_response(422, "invalid_json", f"invalid JSON: {detail}".rstrip(": "))
    where = _field_of(loc)
    if where is not None and where.startswith("features.") and len(loc) > 3:
        # One error per member of the value union: say it once, plainly.
        message = f"{where}: must be a number, a boolean, a string or null"
    else:
        message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
    others = {_field_of(tuple(e.get("loc", ()))) for e in errors[1:]} - {where}
    if others:
        message += f" (and {len(others)} more)"
    return error_response(422, "invalid_request", message, where)


class _TooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")


class _BodyLimit:
    """413 for a request body over ``limit`` bytes: by its Content-Length before anything runs,
    else counted as it is read (FastAPI re-raises an HTTPException raised while reading the body,
    so the error handlers answer it). FastAPI's own ``max_body_size`` answers a too-long
    Content-Length in plain text, outside the error shape."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            too_large = _TooLarge(self.limit)
            await error_response(413, "payload_too_large", str(too_large.detail))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


# -- the app -------------------------------------------------------------------------------------


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "driftline_api_requests", "HTTP API requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "driftline_api_request_seconds",
            "HTTP API request latency",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=registry,
        )
        self.predictions = Counter(
            "driftline_api_predictions", "Predictions served by the HTTP API", ["model", "version", "arm"],
            registry=registry,
        )  # fmt: skip


def _deployment_out(d: Deployment) -> DeploymentOut:
    return DeploymentOut(
        name=d.name,
        production=d.production.version if d.production else None,
        canary=d.canary.version if d.canary else None,
        canary_fraction=d.canary_fraction if d.canary else 0.0,
        shadow=d.shadow.version if d.shadow else None,
    )


def _check_types(features: Mapping[str, FeatureValue], specs: Mapping[str, FeatureSpec], ref: str) -> None:
    """422 on a feature the model does not take, or a value of the wrong kind (strings are never
    read as numbers, as in the event contract: the worker would score such a value as missing)."""
    for name, value in features.items():
        spec = specs.get(name)
        if spec is None:
            raise ApiError(
                422, "unknown_feature", f"features.{name}: not an input of {ref}", f"features.{name}"
            )
        if value is None or kind_of(value) == spec.kind:
            continue
        raise ApiError(
            422,
            "invalid_feature",
            f"features.{name}: {ref} expects {EXPECTED[spec.kind]} (or null), got {describe_value(value)}",
            f"features.{name}",
        )


def create_app(deps: ApiDeps) -> FastAPI:
    """The API over `deps` (see the module docstring)."""
    metrics = _Metrics(deps.prometheus)
    app = FastAPI(
        title="Driftline",
        summary="Streaming ML monitoring: predictions, features, models, drift and alerts.",
    )
    app.add_middleware(_BodyLimit, limit=deps.max_body_bytes)

    @functools.lru_cache(maxsize=deps.session_cache)
    def session(name: str, version: int, sha256: str) -> ModelSession:
        # Keyed by sha256 too: a version number reused by a wiped registry is another model.
        meta, loaded = deps.registry.load(name, version)  # verifies the artifact's sha256
        if meta.sha256 != sha256:
            raise ModelIntegrityError(f"{meta.ref} changed while loading (sha256 {meta.sha256})")
        return loaded

    def session_of(meta: ModelVersion) -> ModelSession:
        try:
            return session(meta.name, meta.version, meta.sha256)
        except ModelIntegrityError as exc:
            log.error("refusing to serve %s: %s", meta.ref, exc)
            raise ApiError(
                503, "model_unavailable", f"refusing to serve {meta.ref}: its artifact failed verification"
            ) from None

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if deps.token is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if credentials is None or not hmac.compare_digest(given, deps.token.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong bearer token" if credentials else "missing bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # -- errors ----------------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        if deps.redis_down is not None:
            deps.redis_down(exc)
        else:
            log.warning("%s %s: Redis: %s", request.method, request.url.path, exc)
        # The cause is logged; the body says only which dependency is away.
        return error_response(
            503, "unavailable", "Redis unavailable", headers={"Retry-After": str(deps.retry_after_seconds)}
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal server error (logged)")

    # -- metrics of the API itself ---------------------------------------------------------------

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            matched = request.scope.get("route")
            # The route template, not the path: /features/{entity_id} is one series, not one per id.
            name = getattr(matched, "path", "<unmatched>")
            metrics.requests.labels(request.method, name, str(status)).inc()
            metrics.latency.labels(request.method, name).observe(time.perf_counter() - started)

    # -- open routes -----------------------------------------------------------------------------

    @app.get("/healthz", response_model=HealthOut, tags=["health"])
    def healthz() -> HealthOut:
        """The process is up (no dependency is checked)."""
        return HealthOut(status="ok")

    @app.get(
        "/readyz", response_model=ReadyOut, tags=["health"], responses={503: {"description": "not ready"}}
    )
    def readyz() -> ReadyOut:
        """Every dependency check passes and the default model's production version loads."""
        results: dict[str, str] = {}
        for check_name, check in deps.checks.items():
            try:
                results[check_name] = "ok" if check() else "failed"
            except Exception as exc:  # any failure of a dependency means "not ready"; why is logged
                log.warning("readyz: %s check failed: %s: %s", check_name, type(exc).__name__, exc)
                results[check_name] = "failed: unavailable"
        model_check = f"model {deps.model}"
        try:
            production = deps.registry.deployment(deps.model).production
            if production is None:
                results[model_check] = "failed: no production version"
            else:
                session(production.name, production.version, production.sha256)
                results[model_check] = f"ok: {production.ref}"
        except Exception as exc:  # unreachable registry, missing or corrupt artifact (logged)
            log.warning("readyz: %s check failed: %s: %s", model_check, type(exc).__name__, exc)
            results[model_check] = "failed: does not load (see the API log)"
        failed = [k for k, v in results.items() if not v.startswith("ok")]
        if failed:
            raise ApiError(
                503,
                "not_ready",
                "not ready: " + "; ".join(f"{k} {results[k]}" for k in failed),
                headers={"Retry-After": str(deps.retry_after_seconds)},
                checks=results,
            )
        return ReadyOut(status="ready", checks=results)

    # -- authenticated routes --------------------------------------------------------------------

    api = APIRouter(dependencies=[Depends(authorize)])

    def deployment_of(name: str) -> Deployment:
        try:
            check_model_name(name)
        except ValueError:
            raise ApiError(404, "unknown_model", f"unknown model {name!r}") from None
        d = deps.registry.deployment(name)
        if (
            d.production is None
            and d.canary is None
            and d.shadow is None
            and name not in deps.registry.names()
        ):
            raise ApiError(404, "unknown_model", f"unknown model {name!r}")
        return d

    @api.post("/predict", response_model=PredictResponse, response_model_by_alias=True, tags=["predict"])
    def predict(req: PredictRequest) -> PredictResponse:
        """Score one event with the model's production version, or its canary for the entity's bucket."""
        name = req.model or deps.model
        d = deployment_of(name)
        if d.production is None:
            raise ApiError(503, "no_production_version", f"model {name!r} has no production version to serve")
        on_canary = d.canary is not None and int(route(d, [req.entity_id])[0]) == CANARY
        meta = d.canary if on_canary and d.canary is not None else d.production
        # Types follow production's specs (the contract clients code against); a canary's
        # extra inputs are accepted too.
        specs = {f.name: f for f in (d.canary.features if d.canary else [])}
        specs.update((f.name, f) for f in d.production.features)
        _check_types(req.features, specs, d.production.ref)

        needed = [f.name for f in meta.features if f.name not in req.features]
        reader = deps.features_of(meta) if deps.features_of is not None else deps.features
        stored = reader.describe(req.entity_id) if reader is not None and needed else None
        known: Mapping[str, float | str | None] = stored.values if stored is not None else {}
        inputs: dict[str, float | int | str | None] = {
            f.name: req.features[f.name] if f.name in req.features else known.get(f.name)
            for f in meta.features
        }
        score = float(session_of(meta).score_events({k: [v] for k, v in inputs.items()}, 1)[0])
        arm: Literal["production", "canary"] = "canary" if on_canary else "production"
        metrics.predictions.labels(meta.name, str(meta.version), arm).inc()
        return PredictResponse.model_validate(
            {
                "score": score,
                "class": int(score >= meta.threshold),
                "model": meta.name,
                "version": meta.version,
                "arm": arm,
                "features": inputs,
            }
        )

    @api.get("/features/{entity_id}", response_model=EntityFeaturesOut, tags=["features"])
    def features(entity_id: str) -> EntityFeaturesOut:
        """The entity's latest online features, as of its newest event, in the view of the default
        model's production version."""
        reader = deps.features
        production = deps.registry.deployment(deps.model).production if deps.features_of else None
        if deps.features_of is not None and production is not None:
            reader = deps.features_of(production)
        if reader is None:
            raise ApiError(404, "no_feature_store", "the online feature store is off (feature_view: none)")
        record = reader.describe(entity_id)
        if record is None:
            raise ApiError(404, "unknown_entity", f"no features for entity {entity_id}", "entity_id")
        return EntityFeaturesOut(
            entity_id=entity_id,
            view=record.view,
            as_of=record.as_of,
            updated_at=record.updated_at,
            events=record.events,
            values=dict(record.values),
        )

    @api.get("/models", response_model=ModelsOut, tags=["models"])
    def models() -> ModelsOut:
        """Every registered model and the versions serving it."""
        return ModelsOut(models=[_deployment_out(deps.registry.deployment(n)) for n in deps.registry.names()])

    @api.get("/models/{name}", response_model=ModelOut, tags=["models"])
    def model(name: str) -> ModelOut:
        """A model's versions (without reference samples) and its lifecycle events, oldest first."""
        d = deployment_of(name)
        versions = [
            VersionOut(
                version=v.version,
                stage=v.stage,
                sha256=v.sha256,
                created_at=v.created_at,
                canary_fraction=v.canary_fraction,
                threshold=v.threshold,
                features=v.features,
                training=v.training,
            )
            for v in deps.registry.versions(name)
        ]
        return ModelOut(
            name=name, deployment=_deployment_out(d), versions=versions, history=deps.registry.history(name)
        )

    @api.get("/drift", response_model=DriftOut, tags=["drift"])
    def drift() -> DriftOut:
        """The latest closed-window statistic per model, version, feature and detector."""
        stats = sorted(deps.drift(), key=lambda s: (s.model, s.version, s.feature, s.detector))
        return DriftOut(stats=stats)

    @api.get("/alerts", response_model=AlertsOut, tags=["drift"])
    def alerts(
        since: Annotated[float | None, Query(description="Only alerts raised at or after (epoch s).")] = None,
        severity: Annotated[Literal["warning", "critical"] | None, Query()] = None,
    ) -> AlertsOut:
        """Recent per-signal alerts (the last 1,000 kept), newest first: the detail behind incidents."""
        return AlertsOut(alerts=deps.alerts(since, severity))

    def all_incidents() -> list[dict[str, Any]]:
        found = deps.incidents() if deps.incidents is not None else []
        return sorted(found, key=lambda i: str(i.get("opened_at", "")), reverse=True)

    @api.get("/incidents", response_model=IncidentsOut, tags=["drift"])
    def incidents(
        state: Annotated[Literal["open", "resolved"] | None, Query()] = None,
        model: Annotated[str | None, Query(description="Only this model's incidents.")] = None,
        since: Annotated[
            float | None, Query(description="Only incidents opened at or after (epoch s).")
        ] = None,
    ) -> IncidentsOut:
        """Drift incidents (one per change of a model version), newest first, with their evidence."""
        out = []
        for inc in all_incidents():
            if state is not None and inc.get("state") != state:
                continue
            if model is not None and inc.get("model") != model:
                continue
            opened = inc.get("opened_at")
            if since is not None and (opened is None or datetime.fromisoformat(opened).timestamp() < since):
                continue
            out.append(inc)
        return IncidentsOut(incidents=out)

    @api.get("/incidents/{incident_id}", tags=["drift"])
    def incident(incident_id: str) -> dict[str, Any]:
        """One incident's latest state: features with their evidence, windows, severity, summary."""
        for inc in all_incidents():
            if inc.get("id") == incident_id:
                return inc
        raise ApiError(404, "unknown_incident", f"no incident {incident_id}", "incident_id")

    @api.get("/metrics", tags=["health"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus text format: the API's request counters and latency histograms."""
        return Response(generate_latest(deps.prometheus), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api)
    return app
