"""A version's artifact on disk: read back only when it matches the SHA-256 the registry recorded."""

from __future__ import annotations

import hashlib
from pathlib import Path

from services.core.errors import FailedPrecondition
from services.model.registry.versions import ModelVersion


class ArtifactCorrupt(FailedPrecondition):
    """A version's artifact is missing or fails its checksum."""

    default_reason = "ARTIFACT_CORRUPT"


def read_artifact(model_dir: Path, version: ModelVersion) -> bytes:
    """The version's artifact bytes, checked against its SHA-256 (ArtifactCorrupt otherwise)."""
    path = model_dir / version.artifact_path
    try:
        data = path.read_bytes()
    except OSError:
        raise ArtifactCorrupt(
            f"the artifact of {version.model_id} is missing ({version.artifact_path}); train a new version",
            metadata={"model_id": version.model_id},
        ) from None
    if hashlib.sha256(data).hexdigest() != version.artifact_sha256:
        raise ArtifactCorrupt(
            f"the artifact of {version.model_id} fails its checksum; train a new version",
            metadata={"model_id": version.model_id},
        )
    return data
