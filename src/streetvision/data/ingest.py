"""Ingest: hash, decode-check, deduplicate, quarantine and split samples into one index.

Streaming: a sample's bytes are held only while it is processed. Exact duplicates (same SHA-256)
are merged; if their labels conflict, every copy is quarantined. Images that do not decode, and
NATIX rows whose scene description contradicts their label, are quarantined with a reason. Nothing
is dropped silently: every input row ends in the index, the duplicates list or the quarantine list.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from streetvision.data.sources import RawSample, configured_samples
from streetvision.data.splits import UNLABELED, assign_split
from streetvision.io.atomic import atomic_write_bytes
from streetvision.io.hashing import sha256_bytes

FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


@dataclass
class Entry:
    sha256: str
    label: int | None
    path: Path
    origin: str
    width: int
    height: int
    conflicting: bool = False
    merged_origins: list[str] = field(default_factory=list)


@dataclass
class IngestResult:
    entries: dict[str, Entry]
    quarantine: list[dict]
    duplicates: list[dict]
    rows_read: int = 0


def decode_check(data: bytes) -> tuple[str, int, int]:
    """Fully decode the image (truncated JPEGs fail only on load); return (format, width, height)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.format or "unknown", image.width, image.height


class DescriptionCheck:
    """Flags NATIX rows whose ``scene_description`` contradicts the label (validators skip them)."""

    def __init__(self, positive_keywords: list[str], negative_phrases: list[str]):
        self.negative = [p.lower() for p in negative_phrases]
        self.positive = re.compile("|".join(re.escape(k.lower()) for k in positive_keywords)) if positive_keywords else None

    def contradicts(self, label: int | None, description: str | None) -> bool:
        if label is None or not description or self.positive is None:
            return False
        text = description.lower()
        negated = any(phrase in text for phrase in self.negative)
        for phrase in self.negative:
            text = text.replace(phrase, " ")
        mentions_roadwork = bool(self.positive.search(text))
        if label == 1:
            return negated and not mentions_roadwork
        return mentions_roadwork


class Ingestor:
    def __init__(self, store_dir: Path, description_check: DescriptionCheck | None = None):
        self.store_dir = Path(store_dir)
        self.description_check = description_check
        self.result = IngestResult(entries={}, quarantine=[], duplicates=[])

    def _quarantine(self, sample: RawSample, sha: str | None, reason: str, stored: Path | None = None) -> None:
        self.result.quarantine.append({
            "origin": sample.origin, "sha256": sha, "label": sample.label, "reason": reason,
            "stored_path": str(stored) if stored else None,
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
        try:
            fmt, width, height = decode_check(data)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            stored = self._store(data, sha, ".bin") if sample.data is not None else None
            self._quarantine(sample, sha, f"undecodable: {err}", stored)
            return
        if self.description_check and self.description_check.contradicts(sample.label, sample.scene_description):
            stored = self._store(data, sha, FORMAT_SUFFIX.get(fmt, ".img")) if sample.data is not None else None
            self._quarantine(sample, sha, f"scene_description contradicts label {sample.label}: {sample.scene_description!r}", stored)
            return
        existing = self.result.entries.get(sha)
        if existing is not None:
            self._merge(existing, sample)
            return
        path = self._store(data, sha, FORMAT_SUFFIX.get(fmt, ".img")) if sample.data is not None else Path(sample.path)
        self.result.entries[sha] = Entry(sha, sample.label, path, sample.origin, width, height)

    def _merge(self, existing: Entry, sample: RawSample) -> None:
        if sample.label is None or sample.label == existing.label:
            existing.merged_origins.append(sample.origin)
        elif existing.label is None:  # an unlabeled copy seen first: the labelled one defines it
            existing.merged_origins.append(existing.origin)
            existing.label, existing.origin = sample.label, sample.origin
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
                        "origin": origin, "sha256": sha, "label": None,
                        "reason": "duplicate with conflicting labels", "stored_path": str(entry.path),
                    })
                del self.result.entries[sha]
            else:
                for origin in entry.merged_origins:
                    self.result.duplicates.append({"origin": origin, "sha256": sha, "kept_origin": entry.origin})
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
            "width": entry.width,
            "height": entry.height,
        })
    return rows


def ingest_configured(data_cfg: dict, store_dir: Path, synthetic_cache: Path) -> IngestResult:
    """Ingest every configured source: labelled samples first, so that an unlabeled copy of a labelled
    image joins the labelled one (and its split)."""
    check = None
    if data_cfg["source"] == "natix_parquet" and data_cfg["natix"]["check_scene_description"]:
        check = DescriptionCheck(data_cfg["natix"]["positive_keywords"], data_cfg["natix"]["negative_phrases"])
    ingestor = Ingestor(store_dir, check)
    labelled, unlabeled = configured_samples(data_cfg, synthetic_cache)
    ingestor.add_all(labelled)
    ingestor.add_all(unlabeled)
    return ingestor.finish()
