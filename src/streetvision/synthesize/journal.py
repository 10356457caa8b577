"""Append-only JSON lines, one per finished unit of work (a caption, a prompt, an image), flushed and
fsynced as each is written: a kill loses at most the line in flight. A torn last line (the process died
mid-write) is cut off before the next append; a bad line elsewhere is an error naming the file and line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from streetvision.errors import StreetvisionError


class JournalError(StreetvisionError):
    """A journal line that is not JSON or lacks its ``number``, before the last line."""


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict[int, dict]:
        """Finished entries by image number (a later line for the same number wins)."""
        if not self.path.is_file():
            return {}
        raw = self.path.read_bytes()
        *complete, tail = raw.split(b"\n")  # the tail has no newline: its write did not finish
        entries: dict[int, dict] = {}
        for line_no, line in enumerate(complete, start=1):
            try:
                entry = json.loads(line)
                entries[int(entry["number"])] = entry
            except (ValueError, KeyError, TypeError) as err:
                raise JournalError(f"{self.path}: line {line_no} is not a journal entry ({err}); delete the "
                                   "file to redo this shard's stage") from err
        if tail:
            with open(self.path, "r+b") as handle:  # cut it, so that the next append starts a line
                handle.truncate(len(raw) - len(tail))
        return entries

    def append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
