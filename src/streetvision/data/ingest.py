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
    mask_center: str | None = None
    level_fallback: bool = False
    challenge_path: Path | None = None  # the bytes challenges start from (the validators' cached re-save)
    challenge_size: int = 0
    challenge_sha256: str | None = None
    train_path: Path | None = None  # what training views read: the reduced store copy, or the source itself
    train_size: int = 0
    train_sha256: str | None = None
    level0_path: Path | None = None  # the reduced stores: its level-0 challenge JPEG (what validators send)
    level0_size: int = 0
    level0_sha256: str | None = None
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


SAMPLED_FORMATS = ("JPEG", "PNG")  # the validators' cache samples only .jpg/.jpeg/.png files


def validator_skip_reason(label: int | None, description, image_format: str | None = None) -> str | None:
    """Why a validator would never send this row of the NATIX data set as a challenge (None when it would).

    Validators skip rows whose label and ``scene_description`` disagree by presence alone: label 0 with a
    (truthy) description, or label 1 without one; a shard without the column reads as None there, so all
    its label-1 rows are skipped. Their cache re-saves each image under its PIL format's name and samples
    only .jpg/.jpeg/.png, so a row PIL reads as another format (MPO, WEBP, ...) is never sent
    (``image_format``: PIL's name for it; None skips that rule). Other sources' images have no such rules.
    """
    if image_format is not None and image_format not in SAMPLED_FORMATS:
        return f"validator would skip: PIL reads it as {image_format}, a format their cache never samples"
    if label is None:
        return None
    if description is NO_DESCRIPTION_COLUMN:
        if label == 1:
            return ("validator would skip: label 1 in a shard without a scene_description column "
                    "(it reads as None)")
        return None
    if label == 0 and description:
        return "validator would skip: label 0 with a scene_description"
    if label == 1 and not description:
        return "validator would skip: label 1 without a scene_description"
    return None


class Ingestor:
    def __init__(self, store_dir: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 store: str = "original"):
        self.store_dir = Path(store_dir)
        self.max_pixels = max_pixels
        self.store = store  # data.store: original, reduced or reduced_raw
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
        skip = validator_skip_reason(sample.label, sample.scene_description,
                                     fmt) if sample.natix_row else None
        if skip:
            stored = self._store(data, sha, FORMAT_SUFFIX.get(fmt, ".img")) if keep_copy else None
            self._quarantine(sample, sha, f"{skip}: {sample.scene_description!r}", stored)
            return
        existing = self.result.entries.get(sha)
        if existing is not None:
            self._merge(existing, sample, data, fmt)
            return
        path = self._store(data, sha, FORMAT_SUFFIX.get(fmt, ".img")) if keep_copy else Path(sample.path)
        entry = Entry(sha, sample.label, path, sample.origin, width, height, len(data), sample.source,
                      sample.domain, sample.mask_center, sample.level_fallback)
        self._add_challenge_source(entry, data, fmt)
        self.result.entries[sha] = entry

    def _add_challenge_source(self, entry: Entry, data: bytes, fmt: str) -> None:
        """The bytes its challenges start from: for a real image, what a validator's cache step makes of it
        (``challenge.validator_cache``: a JPEG re-saved at quality 75); validators cache generated images
        as lossless PNG, so a synthetic-domain image is its own source."""
        if entry.domain == "synthetic":
            entry.challenge_path, entry.challenge_size = entry.path, entry.size
            entry.challenge_sha256 = entry.sha256
            self._add_training_copy(entry, data)
            return
        from streetvision.data.challenge import validator_cache

        cached = validator_cache(data)
        cached_sha = sha256_bytes(cached)
        entry.challenge_path = self._store(cached, cached_sha, FORMAT_SUFFIX.get(fmt, ".img"))
        entry.challenge_size, entry.challenge_sha256 = len(cached), cached_sha
        self._add_training_copy(entry, cached)

    def _add_training_copy(self, entry: Entry, challenge_source: bytes) -> None:
        """With a reduced store, a smaller copy of the challenge source for training views (every crop
        keeps 336 px across: ``challenge.store_size``); otherwise, or when the image is that small already,
        training reads the challenge source itself. The reduced stores also keep the image's level-0
        challenge (deterministic: the validator's exact JPEG), decoded when training draws level 0."""
        copy = None
        if self.store != "original":
            from streetvision.data.challenge import (
                LEVEL0_SUFFIX,
                STORE_SUFFIXES,
                level0_challenge_jpeg,
                store_copy_bytes,
            )

            level0 = level0_challenge_jpeg(challenge_source)
            entry.level0_sha256, entry.level0_size = sha256_bytes(level0), len(level0)
            entry.level0_path = self._store(level0, entry.level0_sha256, LEVEL0_SUFFIX)
            copy = store_copy_bytes(challenge_source, self.store)
        if copy is None:
            entry.train_path, entry.train_size = entry.challenge_path, entry.challenge_size
            entry.train_sha256 = entry.challenge_sha256
            return
        data, _ = copy
        sha = sha256_bytes(data)
        entry.train_path = self._store(data, sha, STORE_SUFFIXES[self.store])
        entry.train_size, entry.train_sha256 = len(data), sha

    def _merge(self, existing: Entry, sample: RawSample, data: bytes, fmt: str) -> None:
        if sample.label is None or sample.label == existing.label:
            existing.merged_origins.append(sample.origin)
        elif existing.label is None:  # an unlabeled copy seen first: the labelled one defines it
            existing.merged_origins.append(existing.origin)
            existing.label, existing.origin = sample.label, sample.origin
            existing.source, existing.domain = sample.source, sample.domain
            existing.mask_center, existing.level_fallback = sample.mask_center, sample.level_fallback
            self._add_challenge_source(existing, data, fmt)  # its domain decides the cache step
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


INDEX_COLUMNS = ["id", "sha256", "label", "split", "path", "origin", "source", "domain", "width", "height",
                 "bytes", "challenge_path", "challenge_sha256", "challenge_bytes", "train_path",
                 "train_sha256", "train_bytes", "level0_path", "level0_sha256", "level0_bytes", "mask_center",
                 "level_fallback"]
QUARANTINE_COLUMNS = ["origin", "source", "sha256", "label", "reason", "stored_path"]
DUPLICATE_COLUMNS = ["origin", "sha256", "kept_origin"]


def index_rows(result: IngestResult, ratios: dict[str, float], seed: int, data_dir: Path) -> list[dict]:
    """One index row per unique image, with its split.

    Paths inside the results tree (``data_dir/../..``) are stored relative to ``data_dir`` so that the
    results folder can be moved as a whole; user data elsewhere keeps its absolute path.
    """
    rows = []
    data_dir = data_dir.resolve()
    results_root = data_dir.parent.parent

    def stored(path: Path) -> str:
        path = path.resolve()
        inside = path.is_relative_to(results_root)
        return Path(os.path.relpath(path, data_dir)).as_posix() if inside else str(path)

    for sha, entry in result.entries.items():

        rows.append({
            "id": sha[:16],
            "sha256": sha,
            "label": entry.label,
            "split": UNLABELED if entry.label is None else assign_split(sha, ratios, seed),
            "path": stored(entry.path),
            "origin": entry.origin,
            "source": entry.source,
            "domain": entry.domain,
            "width": entry.width,
            "height": entry.height,
            "bytes": entry.size,
            "challenge_path": stored(entry.challenge_path),
            "challenge_sha256": entry.challenge_sha256,
            "challenge_bytes": entry.challenge_size,
            "train_path": stored(entry.train_path),
            "train_sha256": entry.train_sha256,
            "train_bytes": entry.train_size,
            "level0_path": None if entry.level0_path is None else stored(entry.level0_path),
            "level0_sha256": entry.level0_sha256,
            "level0_bytes": entry.level0_size if entry.level0_path is not None else None,
            "mask_center": entry.mask_center,
            "level_fallback": entry.level_fallback,
        })
    return rows


def ingest_configured(data_cfg: dict, store_dir: Path, synthetic_cache: Path) -> IngestResult:
    """Ingest every configured source: all labelled samples first, so that an unlabeled copy of a labelled
    image joins the labelled one (and its split)."""
    ingestor = Ingestor(store_dir, data_cfg["max_pixels"], store=data_cfg["store"])
    labelled, unlabeled = configured_samples(data_cfg, synthetic_cache, ingestor.result.unsupported_files)
    for samples in labelled + unlabeled:
        ingestor.add_all(samples)
    return ingestor.finish()
