#!/usr/bin/env bash
# Issue 20's GPU checks as ONE prepared command for a lent device machine (the `device`
# tool's `run`; docs/performance.md, section 9). Two steps:
#
#   here, once:   bash benchmarks/device_gradients.sh prepare
#                 (downloads the gemmi wheel the device lacks into .whl/ and copies the
#                 fixtures and the small goldens into .devdata/; both git-ignored)
#   on the GPU:   run(command="bash benchmarks/device_gradients.sh", carry=[".whl", ".devdata"],
#                     timeout_s=600)
#
# On the device it installs the carried wheel, runs the GPU tests (CUDA against the CPU,
# map and gradients; the goldens where present) and the gradient table of
# benchmarks/gradients.py on the GPU (5zck_p1 standard grid in float64 and float32, 193l),
# each with its device name, and writes everything under $OUT (logs and markdown tables).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "prepare" ]; then
    set -e
    mkdir -p .whl .devdata/pdbs
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "gemmi>=0.7"
    mkdir -p .devdata/goldens
    cp "${ERYX_FIXTURES_DIR:?set ERYX_FIXTURES_DIR to the fixtures folder}"/{5zck_p1,193l,7n2h,histidine}.pdb .devdata/pdbs/
    cp "${ERYX_GOLDENS_DIR:?set ERYX_GOLDENS_DIR to the goldens folder}"/{5zck_p1,7n2h}_small.{json,npz} .devdata/goldens/
    du -sh .whl .devdata
    exit 0
fi
OUT="${OUT:-reports/device}"
mkdir -p "$OUT"
# The carried gemmi wheel, then this checkout itself (so that its pytest plugin and backends
# are registered through their entry points, as after a pip install anywhere).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "could not install the carried wheels (.whl/): run 'bash benchmarks/device_gradients.sh prepare' here and carry .whl"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 2
rm -rf build
export PYTHONPATH="/tmp/site" PYTHONUNBUFFERED=1 ERYX_FIXTURES_DIR="$PWD/.devdata/pdbs" ERYX_GOLDENS_DIR="$PWD/.devdata/goldens"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"
rc=0
timeout 150 python3 -m pytest tests/model tests/benchmarking -q -m gpu -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" || rc=1
B="python3 benchmarks/gradients.py --device cuda --repeat 5"
timeout 120 $B | tee "$OUT/gradients_5zck_p1_float64.md" || rc=1
timeout 90 $B --dtype float32 | tee "$OUT/gradients_5zck_p1_float32.md" || rc=1
timeout 120 $B --pdb 193l --grid='-10,10,2;-10,10,2;-6,6,2' --n-q 1000 | tee "$OUT/gradients_193l_float64.md" || rc=1
# The grid chunks are sized for a CPU cache (2 MiB of phases, ~1,200 points on 5zck_p1):
# on a GPU that is many small kernels. Larger chunks (up to the model's 32,768 points):
for cb in 33554432 67108864; do
    timeout 60 $B --repeat 3 --no-memory --chunk-bytes $cb | tee "$OUT/gradients_5zck_p1_chunk_$cb.md" || rc=1
done
exit $rc
