#!/usr/bin/env bash
# The whole suite, in order: package in sync with notebooks, notebooks clean, notebook tests, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

snapshot() { find "$@" -type f \( -name '*.py' -o -name '*.ipynb' \) -print0 | sort -z | xargs -0 md5sum; }

echo "== nbdev_export: lincir/ must match the notebooks"
before=$(snapshot lincir)
nbdev_export
after=$(snapshot lincir)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "FAIL: nbdev_export changed lincir/ -- run nbdev_export and commit the result"; exit 1
fi

echo "== nbdev_clean: notebooks must be clean"
before=$(snapshot nbs)
nbdev_clean
after=$(snapshot nbs)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "FAIL: nbdev_clean changed notebooks -- run nbdev_clean and commit the result"; exit 1
fi

echo "== nbdev_test"
nbdev_test --n_workers 2 --timing

echo "== pytest"
python -m pytest tests
