"""Ingest: hash, decode-check, deduplicate, quarantine and split samples into one index.

Streaming: a sample's bytes are held only while it is processed. Exact duplicates (same SHA-256), also
across sources, are merged (the first copy keeps its source and domain); if their labels conflict, every
copy is quarantined. Quarantined with a reason: images that do not decode, have no 8-bit RGB meaning, are
smaller than 2x2 pixels or larger than ``data.max_pixels`` (checked from the header, before decoding), and
NATIX rows a validator would skip (``validator_skip_reason``). Nothing is dropped silently: every input row
ends in the index, the duplicates list or the quarantine list, and files of a folder that are not images
are counted (``IngestResult.unsupported_files``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from streetvision.data.images import DEFAULT_MAX_PIXELS, ImageError, ImageTooLargeError, open_image, read_rgb
from streetvision.data.sources import NO_DESCRIPTION_COLUMN, RawSample, SkippedFiles, configured_samples
from streetvision.data.splits import UNLABELED, assign_split
from streetvision.io.atomic import atomic_write_bytes
from streetvision.io.hashing import sha256_bytes

FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


MIN_SIDE = 2  # smaller images cannot go through a validator's crop and resize


@dataclass
class Entry:
    sha256: str
    label: int | None
    path: Path
    origin: str
    width: int
    height: int
    size: int = 0  # bytes of the image file (verify compares it; --deep re-hashes)
    source: str = ""
    domain: str = ""
    mask_center: tuple[int, int] | None = None
    conflicting: bool = False
    merged_origins: list[str] = field(default_factory=list)


@dataclass
class IngestResult:
    entries: dict[str, Entry]
    quarantine: list[dict]
    duplicates: list[dict]
    rows_read: int = 0
    unsupported_files: SkippedFiles = field(default_factory=SkippedFiles)


def decode_check(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Check the size from the header, fully decode the image (truncated JPEGs fail only on load) and
    convert it to 8-bit RGB as every consumer does (``data.images``); return (format, width, height).
    Raises ``ImageError`` (with the reason) when any of that fails or the image is too small to challenge."""
    opened = open_image(data, max_pixels)
    image = read_rgb(opened)
    if min(image.size) < MIN_SIDE:
        raise ImageError(f"{image.width}x{image.height} pixels, smaller than {MIN_SIDE}x{MIN_SIDE}")
    return opened.format or "unknown", image.width, image.height


def validator_skip_reason(label: int | None, description) -> str | None:
    """Why a NATIX validator would never send this row as a challenge (None when it would).

    Validators skip rows whose label and ``scene_description`` disagree by presence alone: label 0 with a
    (truthy) description, or label 1 without one. Rows of shards without the column are kept: the rule
    cannot apply to data that never had descriptions.
    """
    if description is NO_DESCRIPTION_COLUMN or label is None:
        return None
    if label == 0 and description:
        return "validator would skip: label 0 with a scene_description"
    if label == 1 and not description:
        return "validator would skip: label 1 without a scene_description"
    return None


class Ingestor:
    def __init__(self, store_dir: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.store_dir = Path(store_dir)
        self.max_pixels = max_pixels
        self.result = IngestResult(entries={}, quarantine=[], duplicates=[])

    def _quarantine(self, sample: RawSample, sha: str | None, reason: str,
                    stored: Path | None = None) -> None:
        self.result.quarantine.append({
            "origin": sample.origin, "source": sample.source, "sha256": sha, "label": sample.label,
            "reason": reason, "stored_path": str(stored) if stored else None,
        })

    def _store(self, data: bytes, sha: str, suffix: str) -> Path:
        """Inline bytes (parquet) go to a content-addressed store; the index then points at files."""
        target = self.store_dir / sha[:2] / f"{sha}{suffix}"
        if not target.exists():
            atomic_write_bytes(target, data, durable=False)
        return target

    def add(self, sample: RawSample) -> None:
        self.result.rows_read += 1
        try:
            data = sample.read_bytes()
        except OSError as err:
            self._quarantine(sample, None, f"unreadable: {err.strerror or err}")
            return
        sha = sha256_bytes(data)
        keep_copy = sample.data is not None or sample.copy_to_store  # else the index names the user's file
        try:
            fmt, width, height = decode_check(data, self.max_pixels)
        except ImageTooLargeError as err:
            self._quarantine(sample, sha, f"too large: {err}", self._store(data, sha,
                                                                           ".bin") if keep_copy else None)
            return
        except ImageError as err:
            self._quarantine(sample, sha, f"undecodable: {err}", self._store(data, sha,
                                                                             ".bin") if keep_copy else None)
            return
        skip = validator_skip_reason(sample.label, sample.scene_description)
        if skip:
            stored = self._store(data, sha, FORMAT_SUFFIX.get(fmt, ".img")) if keep_copy else None
            self._quarantine(sample, sha, f"{skip}: {sample.scene_description!r}", stored)
            return
        existing = self.result.entries.get(sha)
        if existing is not None:
            self._merge(existing, sample)
            return
        path = self._store(data, sha, FORMAT_SUFFIX.get(fmt, ".img")) if keep_copy else Path(sample.path)
        self.result.entries[sha] = Entry(sha, sample.label, path, sample.origin, width, height, len(data),
                                         sample.source, sample.domain, sample.mask_center)

    def _merge(self, existing: Entry, sample: RawSample) -> None:
        if sample.label is None or sample.label == existing.label:
            existing.merged_origins.append(sample.origin)
        elif existing.label is None:  # an unlabeled copy seen first: the labelled one defines it
            existing.merged_origins.append(existing.origin)
            existing.label, existing.origin = sample.label, sample.origin
            existing.source, existing.domain = sample.source, sample.domain
        else:
            existing.conflicting = True
            existing.merged_origins.append(sample.origin)

    def add_all(self, samples: Iterable[RawSample]) -> None:
        for sample in samples:
            self.add(sample)

    def finish(self) -> IngestResult:
        """Resolve conflicts: every copy of a conflicting duplicate goes to quarantine."""
        for sha, entry in list(self.result.entries.items()):
            if entry.conflicting:
                for origin in [entry.origin, *entry.merged_origins]:
                    self.result.quarantine.append({
                        "origin": origin, "source": None, "sha256": sha, "label": None,
                        "reason": "duplicate with conflicting labels", "stored_path": str(entry.path),
                    })
                del self.result.entries[sha]
            else:
                for origin in entry.merged_origins:
                    self.result.duplicates.append({"origin": origin, "sha256": sha,
                                                   "kept_origin": entry.origin})
        return self.result


def index_rows(result: IngestResult, ratios: dict[str, float], seed: int, data_dir: Path) -> list[dict]:
    """One index row per unique image, with its split.

    Paths inside the results tree (``data_dir/../..``) are stored relative to ``data_dir`` so that the
    results folder can be moved as a whole; user data elsewhere keeps its absolute path.
    """
    rows = []
    data_dir = data_dir.resolve()
    results_root = data_dir.parent.parent
    for sha, entry in result.entries.items():
        path = entry.path.resolve()
        inside = path.is_relative_to(results_root)
        stored = Path(os.path.relpath(path, data_dir)).as_posix() if inside else str(path)
        rows.append({
            "id": sha[:16],
            "sha256": sha,
            "label": entry.label,
            "split": UNLABELED if entry.label is None else assign_split(sha, ratios, seed),
            "path": stored,
            "origin": entry.origin,
            "source": entry.source,
            "domain": entry.domain,
            "width": entry.width,
            "height": entry.height,
            "bytes": entry.size,
            "mask_center_x": entry.mask_center[0] if entry.mask_center else None,
            "mask_center_y": entry.mask_center[1] if entry.mask_center else None,
        })
    return rows


def ingest_configured(data_cfg: dict, store_dir: Path, synthetic_cache: Path) -> IngestResult:
    """Ingest every configured source: all labelled samples first, so that an unlabeled copy of a labelled
    image joins the labelled one (and its split)."""
    ingestor = Ingestor(store_dir, data_cfg["max_pixels"])
    labelled, unlabeled = configured_samples(data_cfg, synthetic_cache, ingestor.result.unsupported_files)
    for samples in labelled + unlabeled:
        ingestor.add_all(samples)
    return ingestor.finish()
