"""``driftline models ...``, ``driftline train`` and ``driftline worker``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from rich.table import Table

from driftline.cli_common import (
    CliError,
    announce_signing,
    configure_logging,
    console,
    err_console,
    metrics_port_errors,
    reading,
    settings,
)
from driftline.services import require_free_port

if TYPE_CHECKING:
    from driftline.training_data import LabeledArrays
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

    return model_registry(settings("kafka", "redis"))


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
    with reading(reference):
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
    from driftline.model_inputs import show_inputs

    meta = _lookup(lambda: _registry().get(name, version))
    console.print_json(meta.model_dump_json(exclude={"reference", "score_reference", "inputs"}))
    console.print(f"reference distributions: {', '.join(meta.reference) or 'none'}", highlight=False)
    show_inputs(console, meta)


@models_app.command("promote")
def models_promote(ref: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Make a version production (the current one is archived, kept for rollback)."""
    name, version = _versioned(ref)
    _lookup(lambda: _registry().promote(name, version))
    console.print(f"{name}:{version} is production")


@models_app.command("sign")
def models_sign(ref: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Sign a version registered before the registry had a key (DRIFTLINE_REGISTRY_KEY): you vouch for it."""
    name, version = _versioned(ref)
    if settings().registry_key is None:
        raise CliError("signing needs the registry key: set DRIFTLINE_REGISTRY_KEY")
    meta = _lookup(lambda: _registry().sign(name, version))
    console.print(f"{meta.ref} is signed (sha256 {meta.sha256[:12]}…)")


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


@models_app.command("restore")
def models_restore() -> None:
    """Rebuild the registry in Redis from its durable copy (<prefix>.registry), e.g. after a FLUSHALL,
    an eviction or a restore of an old snapshot: every version with its stage, its artifact
    (verified by sha256), the deployment and the lifecycle events; counters never go back.
    Versions only Redis holds (registered before the durable copy existed) are copied to it."""
    from driftline.wiring import model_registry
    from inference.registry_log import RegistryArchiveError, RegistrySnapshot

    registry = model_registry(settings())
    assert registry.durable is not None
    try:
        snap = RegistrySnapshot.fold(registry.durable.read())
        restored = registry.restore(snap)
        backfilled = registry.backfill(snap)
    except RegistryArchiveError as exc:
        raise CliError(f"the registry's durable copy: {exc}") from None
    if not restored and not backfilled:
        raise CliError("neither the durable copy nor Redis holds a model: nothing to restore")
    table = Table("model", "versions", "artifacts (sha256 ok)", "events", "production")
    for m in restored:
        table.add_row(m.name, str(m.versions), str(m.artifacts), str(m.events), str(m.production or "-"))
    console.print(table)
    if backfilled:
        console.print(f"copied to the durable copy (only Redis had them): {', '.join(backfilled)}")
    problems = [*snap.problems] + [
        f"{ref}: its artifact is not in the durable copy" for m in restored for ref in m.missing_artifacts
    ]
    if problems:
        raise CliError(f"restored with {len(problems)} problem(s): {'; '.join(problems[:5])}")


def train(
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Train on generator data.")] = False,
    file: Annotated[Path | None, typer.Option(help="Labeled events, JSONL or CSV.")] = None,
    label: Annotated[
        str | None, typer.Option("--label", "--label-field", help="--file: the label field.")
    ] = None,
    name: Annotated[str, typer.Option(help="Model name.")] = "fraud",
    estimator: Annotated[str, typer.Option(help="logreg or gbt.")] = "logreg",
    n: Annotated[int, typer.Option(min=100, help="--synthetic: training events.")] = 20_000,
    seed: Annotated[int, typer.Option(help="--synthetic: generator seed.")] = 0,
    stage: Annotated[str, typer.Option(help="production or candidate.")] = "production",
    feature_view: Annotated[
        str | None,
        typer.Option(
            "--feature-view",
            help="YAML FeatureView adding aggregates, 'fraud' or 'none' (--file: none, --synthetic: fraud).",
        ),
    ] = None,
    on_wrong_type: Annotated[
        str, typer.Option(help="Worker, for an input of the wrong kind: dead_letter or missing.")
    ] = "dead_letter",
    on_missing: Annotated[
        str, typer.Option(help="Worker, for an input the event lacks: missing or dead_letter.")
    ] = "missing",
) -> None:
    """Train a model (scikit-learn), export it to ONNX and register it with its reference data,
    its feature view and its input contract."""
    from driftline.model_inputs import check_view_name, inputs_table, parse_view, version_inputs
    from inference.metadata import InputPolicy
    from inference.training import register_trained, train_model

    if synthetic == (file is not None):
        raise typer.BadParameter("give exactly one of --synthetic or --file PATH")
    if file is not None and not label:
        from driftline.schema import label_field_hint

        hint = label_field_hint(file)
        raise typer.BadParameter(f"--file needs --label-field FIELD{f' ({hint})' if hint else ''}")
    if estimator not in ("logreg", "gbt"):
        raise typer.BadParameter(f"unknown estimator {estimator!r} (logreg, gbt)", param_hint="--estimator")
    if stage not in ("production", "candidate"):
        raise typer.BadParameter("stage must be production or candidate", param_hint="--stage")
    target: Literal["production", "candidate"] = "production" if stage == "production" else "candidate"
    est: Literal["logreg", "gbt"] = "gbt" if estimator == "gbt" else "logreg"
    for option, value in (("--on-wrong-type", on_wrong_type), ("--on-missing", on_missing)):
        if value not in ("dead_letter", "missing"):
            raise typer.BadParameter(f"{value!r}: use dead_letter or missing", param_hint=option)
    policy = InputPolicy.model_validate({"wrong_type": on_wrong_type, "missing": on_missing})
    view, record = parse_view(feature_view or ("none" if file is not None else "fraud"))
    registry = _registry()
    check_view_name(registry, record)
    from driftline.training_data import file_training_set, synthetic_training_set

    data: LabeledArrays
    if file is not None:
        assert label is not None
        with reading(file):
            data, source = file_training_set(file, label, view), str(file)
    else:
        data, source = synthetic_training_set(n, seed, view=view), f"synthetic fraud n={n} seed={seed}"
    err_console.print(inputs_table(data.raw, f"inputs found in {source} (feature view: {record.label})"))
    err_console.print(f"training {est} on {len(data):,} labeled events ...", highlight=False)
    trained = train_model(
        data.numeric,
        data.categorical,
        data.labels,
        data.ts,
        estimator=est,
        seed=seed,
        source=source,
        boolean=data.boolean,
        warmup=data.warmup,
    )
    inputs = version_inputs(record, data.raw, policy)
    meta = _lookup(lambda: register_trained(registry, name, trained, target, inputs=inputs))
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
    configure_logging()
    s = settings("kafka", "redis")
    port = s.metrics_port if metrics_port is None else metrics_port
    require_free_port(port, "metrics", "--metrics-port (0 = off)")  # before loading anything
    from driftline.wiring import build_worker
    from stream.worker import WorkerConfig

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
    with metrics_port_errors(port):
        w.metrics.serve(port, s.liveness_seconds)  # /metrics and the liveness /healthz
    w.install_signal_handlers()
    err_console.print(
        f"worker {cfg.worker_id}: model {model}, group {cfg.group_id}, "
        f"{'exactly-once' if exactly_once else 'at-least-once'}, metrics :{port or 'off'}",
        highlight=False,
    )
    announce_signing(s)
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
    model: Annotated[str, typer.Option(help="Whose production version's feature view.")] = "fraud",
) -> None:
    """Every feature of an entity, its value, and when it was last updated."""
    from driftline.wiring import feature_view, model_registry, online_store
    from inference.views import view_of

    s = settings("redis")
    view = feature_view(s)  # a model without production, or from before views were recorded
    production = model_registry(s, publish=False).deployment(model).production
    if production is not None:
        view = view_of(production, view)
    if view is None:
        raise CliError(f"no feature store: model {model!r} uses its events' own features (no feature view)")
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


schema_app = typer.Typer(no_args_is_help=True, help="Your own events: what a model would take from them.")


@schema_app.command("infer")
def schema_infer(
    file: Annotated[Path, typer.Argument(help="Events, JSONL or CSV (as for produce --file).")],
    label: Annotated[
        str | None, typer.Option("--label-field", "--label", help="The label field (not an input).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the starter feature view here.")] = None,
) -> None:
    """The inputs a model would use (names, kinds, missing share, distinct values) and a starter
    feature-view YAML with per-entity aggregates to edit and pass to `train --feature-view`."""
    from driftline.schema import infer_schema, starter_yaml

    inferred = infer_schema(file, label)
    table = Table("input", "kind", "missing", "distinct", title=f"{file}: {inferred.events:,} events, "
                  f"{inferred.entities:,} entities", title_justify="left")  # fmt: skip
    for i in inferred.inputs:
        table.add_row(i.name, i.kind, f"{i.missing_share:.1%}", f"{i.distinct:,}")
    console.print(table)
    if inferred.empty:
        console.print(f"never set (left out): {', '.join(inferred.empty)}", highlight=False)
    if inferred.hint:
        console.print(f"hint: {inferred.hint} (left out of the view below)", style="yellow", highlight=False)
    text = starter_yaml(inferred)
    if out is not None:
        out.write_text(text)
        console.print(f"starter feature view written to {out}", highlight=False)
    else:
        console.print(text, highlight=False, markup=False)
