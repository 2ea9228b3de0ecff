#!/usr/bin/env bash
# The one command of a lent GPU machine's call: the GPU tests, then every GPU measurement; all output under $OUT.
#
#   bash benchmarks/gpu_run.sh                      # on the device machine ($OUT set there); carry .whl and .gpu_data
#   PATH=.venv/bin:$PATH OUT=/tmp/gpurun GPU_CHECK_ARGS="--device cpu --quick --budget 55" \
#       bash benchmarks/gpu_run.sh                  # rehearsal on a CPU
#
# Set-up, once, in the repo root: `bash scripts/prepare_gpu_run.sh` makes .whl/ (the pypng and PyAV wheels: the
# machine has no network) and .gpu_data/ (a copy of ../shared's test images and fixtures), both ignored.
#
# Time: ~1-2 min of machine start outside this script; the tests are bounded at 240 s, and gpu_check gets what
# is left of END_BY seconds (default 540) less 25 s (its sections, each stopped at its limit, end within that),
# plus 20 s of grace: the script ends within END_BY seconds, so give the call timeout_s=600. Sections run in gpu_check's order until the budget is spent; a second call on the
# still-warm machine can take the rest without the tests:
#   GPU_TESTS=0 END_BY=300 GPU_CHECK_ARGS="--sections device,query,psnr" bash benchmarks/gpu_run.sh
# Files back in $OUT (at most 8 come back): gpu_run.log (everything), gpu_tests.log, gpu_tests.xml,
# gpu_report.md, gpu_report.json.

set -u
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
START=$SECONDS
END_BY=${END_BY:-540}
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1

echo "== gpu_run.sh $(date -u +%FT%TZ) in $PWD, OUT=$OUT"

# pypng and PyAV from the carried wheels; the package itself runs from src (not installed there)
if ls .whl/*.whl >/dev/null 2>&1; then
    timeout 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || echo "!! pip install of .whl failed"
fi
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

# shared material: ../shared where it exists, else the carried copy
if [ -z "${LIIF_SHARED:-}" ]; then
    if [ -d ../shared/data/benchmarks/Set14 ]; then LIIF_SHARED=$(cd ../shared && pwd); else LIIF_SHARED=$PWD/.gpu_data; fi
fi
export LIIF_SHARED
DATA=$LIIF_SHARED/data/benchmarks
echo "== shared material: $LIIF_SHARED ($(ls "$DATA" 2>/dev/null | tr '\n' ' '))"

echo "== nvidia-smi"
timeout 30 nvidia-smi || echo "(no nvidia-smi)"
timeout 60 python3 -c "import sys, torch, png, av, liif; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| CUDA', torch.version.cuda, '| available', torch.cuda.is_available(), '| PyAV', av.__version__, '| liif from', liif.__file__)" \
    || echo "!! python3 cannot import torch, png, av or liif"

if [ "${GPU_TESTS:-1}" != 0 ]; then
    echo "== GPU tests ($(( SECONDS - START )) s)"
    TIMEOUT_ARGS=()  # pytest-timeout, where installed (the image has it): a hung test fails alone
    if timeout 30 python3 -m pytest --help 2>/dev/null | grep -q -- "--timeout="; then TIMEOUT_ARGS=(--timeout=170); fi
    timeout -k 10 240 python3 -m pytest -v -m gpu tests/test_gpu.py -p no:cacheprovider -rA --durations=0 \
        ${TIMEOUT_ARGS[@]+"${TIMEOUT_ARGS[@]}"} --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log"
    echo "== GPU tests exit code ${PIPESTATUS[0]} (124 = stopped at 240 s) after $(( SECONDS - START )) s"
fi

BUDGET=$(( END_BY - (SECONDS - START) - 25 ))
[ "$BUDGET" -lt 0 ] && BUDGET=0  # the set-up and tests took it all: gpu_check reports every section skipped
echo "== gpu_check, budget $BUDGET s${GPU_CHECK_ARGS:+ (then GPU_CHECK_ARGS: $GPU_CHECK_ARGS)}"
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of words on purpose (last, so that it wins)
timeout -k 10 $(( BUDGET + 20 )) python3 benchmarks/gpu_check.py --out "$OUT" --data-root "$DATA" \
    --budget "$BUDGET" ${GPU_CHECK_ARGS:-}
echo "== gpu_check exit code $? after $(( SECONDS - START )) s"
ls -la "$OUT"
echo "== gpu_run.sh done in $(( SECONDS - START )) s"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null || sleep 1  # let tee finish gpu_run.log
