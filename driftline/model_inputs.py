"""Naming a feature view on the command line and showing a model's inputs to people."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from driftline.errors import DriftlineError
from feature_store.definitions import FeatureView, fraud_feature_view
from inference.metadata import FeatureViewRecord, InputPolicy, ModelVersion, RawInput, VersionInputs
from inference.registry import ModelRegistry
from inference.views import view_record

BUILTIN_VIEWS = {"fraud": fraud_feature_view}


def parse_view(spec: str, what: str = "--feature-view") -> tuple[FeatureView | None, FeatureViewRecord]:
    """``none``, a built-in name (``fraud``) or a YAML file -> (the view, its record)."""
    if spec == "none":
        return None, view_record(None)
    if spec in BUILTIN_VIEWS:
        return (view := BUILTIN_VIEWS[spec]()), view_record(view, "builtin")
    path = Path(spec)
    if not path.is_file():
        raise DriftlineError(
            f"{what} {spec!r}: not 'none', a built-in view ({', '.join(BUILTIN_VIEWS)}) or a YAML file"
        )
    try:
        view = FeatureView.from_file(path)
    except (ValidationError, ValueError) as exc:
        raise DriftlineError(f"{what} {spec}: not a valid feature view: {str(exc).splitlines()[0]}") from None
    return view, view_record(view, "yaml", str(path))


def check_view_name(registry: ModelRegistry, record: FeatureViewRecord) -> None:
    """Refuse a view whose name a registered version uses for another definition: both would
    share one online store, which refuses entity states written by another definition."""
    if record.kind == "none":
        return
    for name in registry.names():
        for v in registry.versions(name):
            other = v.inputs.view if v.inputs is not None else None
            if other is not None and other.name == record.name and other.fingerprint != record.fingerprint:
                raise DriftlineError(
                    f"feature view {record.name!r} is already {v.ref}'s, with another definition "
                    f"(fingerprint {other.fingerprint}): give the edited view a new name"
                )


def version_inputs(
    record: FeatureViewRecord, raw: Sequence[RawInput], policy: InputPolicy | None = None
) -> VersionInputs:
    return VersionInputs(view=record, raw=list(raw), policy=policy or InputPolicy())


def inputs_table(raw: Sequence[RawInput], title: str) -> Table:
    """The raw inputs as a table: name, kind, share of training events lacking it."""
    table = Table("input", "kind", "missing", title=title, title_justify="left")
    for r in raw:
        table.add_row(r.name, r.kind, f"{r.missing_share:.1%}")
    return table


def show_inputs(console: Console, meta: ModelVersion) -> None:
    """What `driftline models show` prints about the inputs: the view, the contract, the policy."""
    if meta.inputs is None:
        console.print(
            "feature view: not recorded (registered before versions recorded their view): served with "
            "DRIFTLINE_FEATURE_VIEW",
            highlight=False,
        )
        return
    inputs = meta.inputs
    console.print(f"feature view: {inputs.view.label}", highlight=False)
    if inputs.raw:
        console.print(inputs_table(inputs.raw, "input contract (raw event fields)"))
    policy = inputs.policy
    console.print(
        f"wrong-typed input: {policy.wrong_type.replace('_', ' ')}; missing input: "
        f"{policy.missing.replace('_', ' ')}",
        highlight=False,
    )
    model_inputs = ", ".join(f"{f.name} ({f.kind})" for f in meta.features)
    console.print(f"model inputs ({len(meta.features)}): {model_inputs}", highlight=False)
