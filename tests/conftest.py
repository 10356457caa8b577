import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def jpeg_bytes(seed: int, size: int = 24) -> bytes:
    """A small, unique, decodable JPEG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def corrupt_jpeg_bytes(seed: int) -> bytes:
    """A JPEG header followed by garbage: opens, but fails to decode."""
    return jpeg_bytes(seed)[:200]


def run_cli(*args: str, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def repo() -> Path:
    return REPO
