"""Crash-safe writes, content hashing and phase manifests."""

from streetvision.io.atomic import (
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
)
from streetvision.io.hashing import config_hash, sha256_bytes, sha256_file
from streetvision.io.manifest import (
    PhaseRecorder,
    find_manifests,
    lineage,
    read_manifest,
    verify_manifest,
    verify_tree,
)

__all__ = [
    "PhaseRecorder",
    "atomic_save_tensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_with",
    "config_hash",
    "find_manifests",
    "lineage",
    "read_manifest",
    "sha256_bytes",
    "sha256_file",
    "verify_manifest",
    "verify_tree",
]
