#!/usr/bin/env bash
# Build a native llama.cpp tool (`llama-bench`, `llama-server`) from the very llama.cpp source that
# llama-cpp-python vendors, with the build flags llama-cpp-python uses (Release, shared libs, GGML_NATIVE,
# OpenMP, no curl), so `firstline bench` compares like with like and FIRSTLINE_ENGINE=llama-server runs the
# same llama.cpp as the embedded engine. Idempotent: does nothing when the binary already exists.
#
#   scripts/build-llama-tool.sh llama-bench     # prints the path of the binary on its last line
#   scripts/build-llama-tool.sh llama-server    # (scripts/build-llama-bench.sh / build-llama-server.sh)
#   scripts/build-llama-tool.sh llama-export-lora   # merges a GGUF LoRA adapter into its base (make bench-tune)
#   LLAMA_BENCH_CACHE=/some/dir scripts/build-llama-tool.sh llama-server
#   EXTRA_CMAKE_ARGS="-DGGML_CUDA=on" ...       # e.g. for a CUDA build (scripts/gpu-bench.sh)
#
# Takes several minutes on 2 cores (only the requested target and what it links are built); both tools
# share one build directory in ~/.cache/firstline, so the second reuses the first's ggml and llama objects.
set -euo pipefail

TARGET="${1:-llama-bench}"
case "$TARGET" in
    llama-bench | llama-server | llama-export-lora) ;;
    *) echo "usage: $0 llama-bench|llama-server|llama-export-lora" >&2; exit 2 ;;
esac

PY="${PYTHON:-.venv/bin/python}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)')}"
SUFFIX="${LLAMA_BENCH_SUFFIX:-}"
CACHE="${LLAMA_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/firstline/llama.cpp-${VERSION}${SUFFIX}}"
BIN="$CACHE/build/bin/$TARGET"
JOBS="${JOBS:-$(nproc)}"

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$CACHE"
# one build at a time per cache (parallel test runs, a bench and a test): the second waits, then finds it built
exec 9>"$CACHE/.build.lock"
flock 9
if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi
SRC="$CACHE/src"
if [[ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]]; then
    # the same fetch-and-unpack `firstline tune` uses for convert_lora_to_gguf.py (models/llama_source.py)
    "$PY" -m models.llama_source --version "$VERSION" --dest "$SRC" >/dev/null
fi

# Flags as in llama-cpp-python's CMakeLists.txt / scikit-build-core defaults: Release, BUILD_SHARED_LIBS,
# LLAMA_CURL=OFF, GGML_NATIVE (default ON outside cross builds), OpenMP (default ON). The server is
# configured too (only built when asked for), without its web UI: no npm build, no download of prebuilt
# assets (firstline talks to its API only).
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
# shellcheck disable=SC2086
cmake -S "$SRC/vendor/llama.cpp" -B "$CACHE/build" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    ${EXTRA_CMAKE_ARGS:-} >&2
cmake --build "$CACHE/build" --target "$TARGET" -j "$JOBS" >&2
test -x "$BIN"
echo "$BIN"
