#!/usr/bin/env bash
# Install transformers 4.45.2 -- the stock NATIX miner's pin -- into a folder of its own, beside the
# project's environment, so tests can load an exported repo the way that miner does
# (tests/test_hf_export.py runs it in a subprocess with this folder first on PYTHONPATH).
#
#   bash .ci/transformers-pin.sh            # folder: $STREETVISION_TRANSFORMERS_PIN_DIR, else
#                                           #         ~/.cache/streetvision/transformers-4.45.2
#   export STREETVISION_TRANSFORMERS_PIN_DIR=...   STREETVISION_REQUIRE_TRANSFORMERS_PIN=1
#
# Only transformers and the two packages whose project versions it cannot use are installed there
# (--no-deps): tokenizers <0.21 and huggingface-hub <1.0. Everything else (torch, numpy, safetensors,
# regex, requests, tqdm, pyyaml, filelock, packaging, fsspec) comes from the active environment.
# Idempotent: an existing working install is kept; a new one is built aside and moved into place.
set -euo pipefail

PIN_VERSION=4.45.2
DIR="${STREETVISION_TRANSFORMERS_PIN_DIR:-$HOME/.cache/streetvision/transformers-$PIN_VERSION}"
PYTHON="${PYTHON:-python}"

works() {  # the folder imports transformers $PIN_VERSION and what the miner's loading needs
  PYTHONPATH="$1" "$PYTHON" - "$1" "$PIN_VERSION" <<'EOF' >/dev/null 2>&1
import os, sys
import transformers
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline  # noqa: F401
folder, version = sys.argv[1], sys.argv[2]
inside = os.path.realpath(transformers.__file__).startswith(os.path.realpath(folder) + os.sep)
sys.exit(not (transformers.__version__ == version and inside))
EOF
}

if [ -d "$DIR" ] && works "$DIR"; then
  echo "transformers $PIN_VERSION already installed in $DIR"
  exit 0
fi

tmp="$DIR.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$(dirname "$DIR")"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --target "$tmp" \
  "transformers==$PIN_VERSION" "tokenizers>=0.20,<0.21" "huggingface-hub>=0.23.2,<1.0"
if ! works "$tmp"; then
  echo "transformers $PIN_VERSION installed in $tmp does not import with this environment" >&2
  exit 1
fi
rm -rf "$DIR"
mv "$tmp" "$DIR"
echo "transformers $PIN_VERSION installed in $DIR"
