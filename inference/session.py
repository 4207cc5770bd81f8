"""ONNX scoring sessions: verified on load, one onnxruntime call per batch, P(class 1) out.

``ModelSession.load`` refuses bytes whose sha256 differs from the metadata's, models that are not
loadable ONNX, and models whose input width differs from the encoded width of the features: all
as `ModelIntegrityError`. Supported outputs are those of skl2onnx binary classifiers converted
with ``zipmap=False`` (a float ``[N, 2]`` probabilities tensor), or a single float score per row.

>>> meta = ModelVersion(name="fraud", version=1, sha256="0" * 64, input_name="input",
...                     features=[FeatureSpec(name="amount", kind="numeric")],
...                     created_at="2026-01-01T00:00:00Z", stage="candidate")
>>> try:
...     ModelSession.load(meta, b"not onnx")
... except ModelIntegrityError as exc:
...     print(exc)  # doctest: +ELLIPSIS
fraud:1: artifact sha256 mismatch: expected 000...000, got 99c0fb27...
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from inference.encoding import Column, encode_features, encoded_width
from inference.metadata import FeatureSpec, ModelVersion

_PROBA_NAMES = ("probabilities", "output_probability", "probability", "probs")


class ModelIntegrityError(ValueError):
    """A model artifact does not match its metadata (hash, loadability, input or output shape)."""


def sha256_hex(data: bytes) -> str:
    """Lowercase hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def _session_options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    return opts


def _pick_output(outputs: Sequence[Any], ref: str) -> tuple[str, bool]:
    """(name, is_two_column) of the output holding class probabilities, else ModelIntegrityError."""
    floats = [o for o in outputs if o.type == "tensor(float)" or o.type == "tensor(double)"]

    def two_columns(o: Any) -> bool:
        return len(o.shape) == 2 and o.shape[1] == 2

    for o in floats:
        if o.name in _PROBA_NAMES and two_columns(o):
            return o.name, True
    pairs = [o for o in floats if two_columns(o)]
    if len(pairs) == 1:
        return pairs[0].name, True
    scores = [o for o in floats if len(o.shape) == 1 or (len(o.shape) == 2 and o.shape[1] == 1)]
    if not pairs and len(scores) == 1:
        return scores[0].name, False
    found = ", ".join(f"{o.name}: {o.type} {o.shape}" for o in outputs)
    raise ModelIntegrityError(
        f"{ref}: cannot find the class-1 probability among the outputs ({found}); "
        "convert binary classifiers with skl2onnx options {'zipmap': False}"
    )


class ModelSession:
    """A loaded, verified ONNX model; `predict` returns float64 P(class 1) per row."""

    def __init__(
        self,
        session: ort.InferenceSession,
        features: Sequence[FeatureSpec],
        ref: str,
        meta: ModelVersion | None = None,
    ) -> None:
        """Use `ModelSession.load` (registered models) or `ModelSession.open` (unregistered bytes)."""
        self.features: list[FeatureSpec] = list(features)
        self.ref = ref
        self.meta = meta
        self.width = encoded_width(self.features)
        self._session = session
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelIntegrityError(f"{ref}: expected one input tensor, the model has {len(inputs)}")
        inp = inputs[0]
        if inp.type != "tensor(float)" or len(inp.shape) != 2:
            raise ModelIntegrityError(
                f"{ref}: input {inp.name!r} must be a 2-d float tensor, got {inp.type} {inp.shape}"
            )
        if inp.shape[1] != self.width:
            raise ModelIntegrityError(
                f"{ref}: input {inp.name!r} has width {inp.shape[1]}, but the {len(self.features)} "
                f"features encode to {self.width} columns"
            )
        self.input_name: str = inp.name
        self._output, self._two_columns = _pick_output(session.get_outputs(), ref)

    @classmethod
    def open(
        cls, onnx_bytes: bytes, features: Sequence[FeatureSpec], ref: str = "unregistered"
    ) -> ModelSession:
        """Open ONNX bytes that have no registry metadata yet (training, registration checks)."""
        try:
            session = ort.InferenceSession(
                onnx_bytes, sess_options=_session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelIntegrityError(f"{ref}: not a loadable ONNX model: {first_line}") from exc
        return cls(session, features, ref)

    @classmethod
    def load(cls, meta: ModelVersion, onnx_bytes: bytes) -> ModelSession:
        """Verify ``sha256(onnx_bytes) == meta.sha256``, then open the model and check its input."""
        actual = sha256_hex(onnx_bytes)
        if actual != meta.sha256:
            raise ModelIntegrityError(
                f"{meta.ref}: artifact sha256 mismatch: expected {meta.sha256}, got {actual}"
            )
        session = cls.open(onnx_bytes, meta.features, ref=meta.ref)
        if session.input_name != meta.input_name:
            raise ModelIntegrityError(
                f"{meta.ref}: model input is {session.input_name!r}, metadata says {meta.input_name!r}"
            )
        session.meta = meta
        return session

    @property
    def threshold(self) -> float:
        """Decision threshold of the registered version (0.5 when unregistered)."""
        return self.meta.threshold if self.meta is not None else 0.5

    def predict(self, X: np.ndarray) -> np.ndarray:
        """float64 P(class 1) for each row of the encoded matrix `X` (one onnxruntime call)."""
        if X.ndim != 2 or X.shape[1] != self.width:
            raise ValueError(f"{self.ref}: expected an [n, {self.width}] matrix, got shape {X.shape}")
        if X.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        (out,) = self._session.run([self._output], {self.input_name: np.ascontiguousarray(X, np.float32)})
        scores = np.asarray(out, dtype=np.float64)
        return scores[:, 1] if self._two_columns else scores.reshape(-1)

    def score_events(self, columns: Mapping[str, Column], n: int) -> np.ndarray:
        """`predict` on ``encode_features(self.features, columns, n)``."""
        return self.predict(encode_features(self.features, columns, n))

    def __repr__(self) -> str:
        return f"ModelSession({self.ref}, width={self.width}, output={self._output!r})"
