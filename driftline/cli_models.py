"""``driftline models ...``, ``driftline train`` and ``driftline worker``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from rich.table import Table

from driftline.cli_common import CliError, console, err_console, settings
from driftline.training_data import LabeledArrays, file_training_set, synthetic_training_set

if TYPE_CHECKING:
    from inference.registry import ModelRegistry

T = TypeVar("T")

models_app = typer.Typer(no_args_is_help=True, help="The model registry: register, inspect, roll out.")


def _parse(ref: str) -> tuple[str, int | None]:
    from inference.registry import parse_ref

    try:
        return parse_ref(ref)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME:VERSION") from None


def _versioned(ref: str) -> tuple[str, int]:
    """NAME:VERSION, where the version is required."""
    name, version = _parse(ref)
    if version is None:
        raise typer.BadParameter(f"{ref!r}: give a version, e.g. {ref}:3", param_hint="NAME:VERSION")
    return name, version


def _registry() -> ModelRegistry:
    from driftline.wiring import model_registry

    return model_registry(settings())


def _lookup(call: Callable[[], T]) -> T:
    try:
        return call()
    except LookupError as exc:
        raise CliError(str(exc.args[0] if exc.args else exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None


@models_app.command("register")
def models_register(
    file: Annotated[
        Path, typer.Argument(help="An ONNX model: float32 input [N, D], class-1 probability out.")
    ],
    name: Annotated[str, typer.Option(help="Model name.")],
    features: Annotated[
        str,
        typer.Option(help="Comma-separated inputs in column order; categorical as name=cat1|cat2|cat3."),
    ],
    reference: Annotated[
        Path | None, typer.Option(help="JSONL/CSV of reference data for the drift detectors.")
    ] = None,
    stage: Annotated[str, typer.Option(help="candidate or production.")] = "candidate",
) -> None:
    """Register an ONNX model exported from anywhere (scikit-learn, PyTorch, LightGBM ...)."""
    from driftline.registering import register_external

    if stage not in ("candidate", "production"):
        raise typer.BadParameter("stage must be candidate or production", param_hint="--stage")
    target: Literal["production", "candidate"] = "production" if stage == "production" else "candidate"
    if not file.is_file():
        raise CliError(f"{file}: no such file")
    meta = _lookup(lambda: register_external(_registry(), file, name, features, reference, target))
    console.print(f"registered {meta.ref} ({meta.stage}), sha256 {meta.sha256[:12]}…", highlight=False)


@models_app.command("list")
def models_list(name: Annotated[str | None, typer.Argument(help="Only this model.")] = None) -> None:
    """Every model version with its stage."""
    registry = _registry()
    table = Table("model", "version", "stage", "created", "estimator", "auc", "sha256")
    for model in [name] if name else registry.names():
        for v in _lookup(partial(registry.versions, model)):
            metrics = v.training.metrics if v.training else {}
            stage = v.stage + (
                f" ({v.canary_fraction:.0%})" if v.stage == "canary" and v.canary_fraction else ""
            )
            table.add_row(
                v.name,
                str(v.version),
                stage,
                v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                v.training.estimator if v.training else "-",
                f"{metrics['auc']:.3f}" if "auc" in metrics else "-",
                v.sha256[:12],
            )
    console.print(table)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION (default: production).")],
) -> None:
    """A version's full metadata as JSON."""
    name, version = _parse(ref)
    meta = _lookup(lambda: _registry().get(name, version))
    console.print_json(meta.model_dump_json(exclude={"reference", "score_reference"}))
    console.print(f"reference distributions: {', '.join(meta.reference) or 'none'}", highlight=False)


@models_app.command("promote")
def models_promote(ref: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Make a version production (the current one is archived, kept for rollback)."""
    name, version = _versioned(ref)
    _lookup(lambda: _registry().promote(name, version))
    console.print(f"{name}:{version} is production")


@models_app.command("rollback")
def models_rollback(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Drop the canary, or go back to the previous production version."""
    _lookup(lambda: _registry().rollback(name))
    console.print(f"rolled back {name}: production is {_registry().get(name).ref}")


@models_app.command("canary")
def models_canary(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION")],
    fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of entities, 0 < F < 1.")],
) -> None:
    """Serve a sticky fraction of entities with this version."""
    name, version = _versioned(ref)
    if not 0 < fraction < 1:
        raise typer.BadParameter("must be between 0 and 1 (exclusive)", param_hint="--fraction")
    _lookup(lambda: _registry().canary(name, version, fraction))
    console.print(f"{name}:{version} is canary for {fraction:.0%} of entities")


@models_app.command("shadow")
def models_shadow(ref: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Score every event with this version too, recorded but not served."""
    name, version = _versioned(ref)
    _lookup(lambda: _registry().shadow(name, version))
    console.print(f"{name}:{version} is shadowing production")


@models_app.command("archive")
def models_archive(ref: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Retire a version that is not serving."""
    name, version = _versioned(ref)
    _lookup(lambda: _registry().archive(name, version))
    console.print(f"{name}:{version} archived")


def train(
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Train on generator data.")] = False,
    file: Annotated[Path | None, typer.Option(help="Labeled events, JSONL or CSV.")] = None,
    label: Annotated[str | None, typer.Option(help="--file: the label field.")] = None,
    name: Annotated[str, typer.Option(help="Model name.")] = "fraud",
    estimator: Annotated[str, typer.Option(help="logreg or gbt.")] = "logreg",
    n: Annotated[int, typer.Option(min=100, help="--synthetic: training events.")] = 20_000,
    seed: Annotated[int, typer.Option(help="--synthetic: generator seed.")] = 0,
    stage: Annotated[str, typer.Option(help="production or candidate.")] = "production",
) -> None:
    """Train a model (scikit-learn), export it to ONNX and register it with its reference data."""
    from inference.training import register_trained, train_model

    if synthetic == (file is not None):
        raise typer.BadParameter("give exactly one of --synthetic or --file PATH")
    if file is not None and not label:
        raise typer.BadParameter("--file needs --label FIELD", param_hint="--label")
    if estimator not in ("logreg", "gbt"):
        raise typer.BadParameter(f"unknown estimator {estimator!r} (logreg, gbt)", param_hint="--estimator")
    if stage not in ("production", "candidate"):
        raise typer.BadParameter("stage must be production or candidate", param_hint="--stage")
    target: Literal["production", "candidate"] = "production" if stage == "production" else "candidate"
    est: Literal["logreg", "gbt"] = "gbt" if estimator == "gbt" else "logreg"
    from driftline.wiring import feature_view

    view = feature_view(settings())
    data: LabeledArrays
    if file is not None:
        assert label is not None
        data, source = file_training_set(file, label, view), str(file)
    else:
        data, source = synthetic_training_set(n, seed, view=view), f"synthetic fraud n={n} seed={seed}"
    err_console.print(f"training {est} on {len(data):,} labeled events ...", highlight=False)
    trained = train_model(
        data.numeric, data.categorical, data.labels, data.ts, estimator=est, seed=seed, source=source
    )
    registry = _registry()
    meta = _lookup(lambda: register_trained(registry, name, trained, target))
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in trained.training.metrics.items())
    console.print(f"registered {meta.ref} as {meta.stage}; holdout: {metrics}", highlight=False)


def worker(
    model: Annotated[str, typer.Option(help="Model name to serve.")] = "fraud",
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Max messages per batch.")] = 1000,
    batch_timeout: Annotated[float, typer.Option(min=0.001, help="Max seconds to fill a batch.")] = 0.02,
    exactly_once: Annotated[bool, typer.Option("--exactly-once", help="Kafka transactions.")] = False,
    group: Annotated[str | None, typer.Option(help="Consumer group (default <prefix>-worker).")] = None,
    worker_id: Annotated[str | None, typer.Option(help="Unique id of this worker instance.")] = None,
    attach_features: Annotated[
        bool, typer.Option("--attach-features", help="Add inputs to predictions.")
    ] = False,
    exit_when_idle: Annotated[float | None, typer.Option(min=0.1, help="Exit after N idle seconds.")] = None,
    metrics_port: Annotated[int | None, typer.Option(min=0, max=65535, help="0 = off.")] = None,
) -> None:
    """Run the streaming inference worker until SIGTERM."""
    from driftline.wiring import build_worker
    from stream.worker import WorkerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = settings()
    cfg = WorkerConfig(
        model=model,
        group_id=group or f"{s.topic_prefix}-worker",
        batch_size=batch_size,
        batch_timeout=batch_timeout,
        exactly_once=exactly_once,
        attach_features=attach_features,
        exit_when_idle=exit_when_idle,
        batch_deadline=s.batch_deadline_seconds,
    )
    if worker_id:
        cfg.worker_id = worker_id
    w = build_worker(s, cfg)
    port = s.metrics_port if metrics_port is None else metrics_port
    w.metrics.serve(port, s.liveness_seconds)
    w.install_signal_handlers()
    err_console.print(
        f"worker {cfg.worker_id}: model {model}, group {cfg.group_id}, "
        f"{'exactly-once' if exactly_once else 'at-least-once'}, metrics :{port or 'off'}",
        highlight=False,
    )
    from inference.session import ModelIntegrityError

    try:
        w.run()
    except ModelIntegrityError as exc:
        raise CliError(f"refusing to serve: {exc}") from None


features_app = typer.Typer(no_args_is_help=True, help="The online feature store.")


@features_app.command("get")
def features_get(
    entity_id: Annotated[str, typer.Argument(help="The entity, e.g. card-000317.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Every feature of an entity, its value, and when it was last updated."""
    from driftline.wiring import feature_view, online_store

    s = settings()
    view = feature_view(s)
    if view is None:
        raise CliError("the feature store is off (DRIFTLINE_FEATURE_VIEW=none)")
    found = online_store(s, view).describe(entity_id)
    if found is None:
        raise CliError(f"no features for entity {entity_id!r} in view {view.name!r}")
    if as_json:
        console.print_json(found.model_dump_json())
        return
    table = Table("feature", "value", title=f"{view.name} / {entity_id}")
    for name, value in found.values.items():
        table.add_row(
            name, "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
        )
    console.print(table)
    console.print(
        f"as of event time {found.as_of.isoformat()}, last updated {found.updated_at.isoformat()}, "
        f"{found.events} events",
        highlight=False,
    )
