#!/usr/bin/env bash
# The whole suite, in order: package in sync with notebooks, notebooks clean, notebook tests, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

snapshot() { find "$1" -type f \( -name '*.py' -o -name '*.ipynb' \) -print0 | sort -z | xargs -0 md5sum; }

# must_not_change DIR WHAT-TO-RUN-AND-COMMIT COMMAND...: run COMMAND, fail if it changed files under DIR
must_not_change() {
  local dir=$1 fix=$2; shift 2
  local before after
  before=$(snapshot "$dir"); "$@"; after=$(snapshot "$dir")
  if [ "$before" != "$after" ]; then
    diff <(echo "$before") <(echo "$after") || true
    echo "FAIL: $* changed $dir/ -- $fix"; exit 1
  fi
}

# The demo's browser test drives Debian's Chromium (Playwright's own browser download cannot work offline).
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium for tests/test_demo_browser.py"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) ||
      echo "WARNING: apt-get install chromium failed; tests/test_demo_browser.py will fail in CI"
  else
    echo "WARNING: /usr/bin/chromium is missing; run: sudo apt-get install chromium"
  fi
fi

echo "== nbdev_export: lincir/ must match the notebooks"
must_not_change lincir "run nbdev_export and commit the result" nbdev_export

echo "== nbdev_clean: notebooks must be clean"
must_not_change nbs "run nbdev_clean and commit the result" nbdev_clean

# The experiment notebooks (train, evaluate, results) run once, in pytest, as a user runs them: papermill with their
# defaults in a fresh folder (tests/test_experiment_notebooks.py). Under nbdev_test they would run a second time, in
# nbs/, where evaluate.ipynb's default Phi (runs/main) is whatever train.ipynb wrote there, or nothing.
EXPERIMENTS='^([_.]|train\.ipynb$|evaluate\.ipynb$|results\.ipynb$)'

# Two lanes side by side, each process with one torch thread: both cores busy, none oversubscribed. (Two threads per
# process on a shared 2-core machine made small tensor operations several times slower: the threads wait for each
# other.) Subprocesses (papermill kernels, DDP workers) inherit the one thread.
# Lane 1, in the background: nbdev_test, then the experiment notebooks by papermill and two long self-contained test
# modules (chosen so that the lanes take about as long); lane 2: the rest of pytest.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
LANE1_TESTS=(tests/test_experiment_notebooks.py tests/test_gpu_script.py tests/test_keywords.py)
notebooks() {
  local status=0
  echo "== nbdev_test (module notebooks; not $EXPERIMENTS)"
  nbdev_test --n_workers 1 --timing --skip_file_re "$EXPERIMENTS" || status=1
  echo "== pytest ${LANE1_TESTS[*]}"
  python -m pytest "${LANE1_TESTS[@]}" || status=1
  return $status
}
nblog=$(mktemp)
echo "== lane 1 (notebooks) in the background; its log: $nblog"
notebooks >"$nblog" 2>&1 &
nbpid=$!
trap 'kill "$nbpid" 2>/dev/null || true' EXIT  # an interrupted suite leaves no notebook running
echo "== lane 2: pytest tests (but ${LANE1_TESTS[*]})"
pytest_status=0; python -m pytest tests "${LANE1_TESTS[@]/#/--ignore=}" || pytest_status=$?
nb_status=0; wait "$nbpid" || nb_status=$?
echo "== lane 1"
cat "$nblog"; rm -f "$nblog"
if [ "$nb_status" != 0 ]; then echo "FAIL: lane 1 (nbdev_test or the experiment notebooks)"; fi
if [ "$pytest_status" != 0 ]; then echo "FAIL: lane 2 (pytest)"; fi
[ "$nb_status" = 0 ] && [ "$pytest_status" = 0 ]
