"""Signed model metadata: Redis write access alone cannot make a worker serve a model.

The registry keeps a version's metadata (its artifact's sha256 included) in the same Redis as
the artifact, so the sha256 check alone catches corruption, not tampering. With a key kept
outside Redis (``DRIFTLINE_REGISTRY_KEY``), every writer signs the metadata it registers
(HMAC-SHA256) and every reader verifies it before loading the artifact.

The signature covers what a version *is* (name, number, artifact sha256, features, input name,
training, references, threshold, input contract), not where it is in its lifecycle (``stage``,
``canary_fraction``): a promotion rewrites those without re-signing. Which signed version serves
is still the deployment hash's to say (whoever writes Redis can roll back to an older signed
version, never bring in a model of their own).

>>> from inference.metadata import FeatureSpec, ModelVersion
>>> mv = ModelVersion(name="fraud", version=1, sha256="ab" * 32, input_name="input",
...                   features=[FeatureSpec(name="amount", kind="numeric")],
...                   created_at="2026-01-01T00:00:00Z", stage="candidate")
>>> signer = MetadataSigner(b"0123456789abcdef")
>>> signed = signer.sign(mv)
>>> signed.signature.startswith("hmac-sha256:")
True
>>> signer.verify(signed.model_copy(update={"stage": "production"}))  # lifecycle: still valid
>>> signer.verify(signed.model_copy(update={"sha256": "cd" * 32}))
Traceback (most recent call last):
...
inference.signing.ModelSignatureError: fraud:1: metadata signature does not verify (forged or tampered with?)
"""

from __future__ import annotations

import hashlib
import hmac

import orjson

from inference.metadata import ModelVersion
from inference.session import ModelIntegrityError

SCHEME = "hmac-sha256"
# Lifecycle fields, rewritten by every stage change; and the signature itself.
UNSIGNED_FIELDS = frozenset({"stage", "canary_fraction", "signature"})
MIN_KEY_BYTES = 16


class ModelSignatureError(ModelIntegrityError):
    """A version's metadata is unsigned or its signature does not verify: it must not serve."""


def signed_content(meta: ModelVersion) -> bytes:
    """The canonical bytes a signature covers: the JSON of the signed fields, keys sorted."""
    data = meta.model_dump(mode="json", exclude=set(UNSIGNED_FIELDS))
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


class MetadataSigner:
    """Signs and verifies `ModelVersion` metadata with HMAC-SHA256 under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a registry key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def signature(self, meta: ModelVersion) -> str:
        return f"{SCHEME}:{hmac.new(self._key, signed_content(meta), hashlib.sha256).hexdigest()}"

    def sign(self, meta: ModelVersion) -> ModelVersion:
        """`meta` with its signature."""
        return meta.model_copy(update={"signature": self.signature(meta)})

    def verify(self, meta: ModelVersion) -> None:
        """Nothing if `meta`'s signature verifies; ModelSignatureError otherwise."""
        if not meta.signature:
            raise ModelSignatureError(
                f"{meta.ref}: metadata is not signed, and this registry requires signatures "
                "(registered without DRIFTLINE_REGISTRY_KEY? re-sign it with `driftline models sign`)"
            )
        if not hmac.compare_digest(meta.signature, self.signature(meta)):
            raise ModelSignatureError(
                f"{meta.ref}: metadata signature does not verify (forged or tampered with?)"
            )
