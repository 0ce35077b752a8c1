#!/usr/bin/env bash
# Packs what scripts/gpu_bench.py needs on a GPU machine that has CUDA, cmake, ninja and a Python with numpy
# but no network and a 64 MiB upload limit per call (the workplace's `device` tool). Two folders, one per
# call, because the model (98 MB) travels in two halves:
#   .gpu/a: the vendored llama.cpp source (trimmed), the model's first half, start.sh
#           call 1: `bash .gpu/a/start.sh`  -> unpacks to /tmp/g and starts the CUDA build in the background
#   .gpu/b: the model's second half, its SHA-256, cp312 wheels (pydantic, pydantic-settings, ...), the
#           llama_cpp Python package without its libraries, the bot's captured prompts, finish.sh
#           call 2 (same warm machine): `bash .gpu/b/finish.sh` -> waits for the build, runs gpu_bench.py
# Add /.gpu/ to .git/info/exclude; carry .gpu/a in call 1 and .gpu/b in call 2. Used on 2026-11-28 (H200);
# llama-server and `gpu_bench.py served` (issue #16) were added after that run and have not run on a GPU yet.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
SITE=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
SRC="${XDG_CACHE_HOME:-$HOME/.cache}/firstline/llama.cpp-$($PY -c 'import llama_cpp; print(llama_cpp.__version__)')/src/vendor/llama.cpp"
[[ -f "$SRC/CMakeLists.txt" ]] || PYTHON=$PY scripts/build-llama-bench.sh >/dev/null  # fetches the source
MODEL=$($PY -c 'from models.loader import default_model_path; print(default_model_path())')
rm -rf .gpu && mkdir -p .gpu/a .gpu/b/whl
# tools/server and the CMake parts of tools/ui (no web sources: the UI is not built) for llama-server (#16)
tar -C "$SRC" -cJf .gpu/a/llama-src.tar.xz --exclude=tools/ui/src --exclude=tools/ui/static \
    --exclude=tools/ui/tests --exclude='*.gguf' \
    CMakeLists.txt cmake common ggml include src tools vendor licenses LICENSE app scripts/ui-assets.cmake
split -b 50000000 -d "$MODEL" .gpu/model.part
mv .gpu/model.part00 .gpu/a/ && mv .gpu/model.part01 .gpu/b/
sha256sum "$MODEL" > .gpu/b/model.sha256
tar -C "$SITE" -czf .gpu/b/llama_cpp_py.tar.gz --exclude=llama_cpp/lib --exclude=__pycache__ llama_cpp
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/b/whl \
    "$($PY -m pip freeze | grep -i '^pydantic==')" "$($PY -m pip freeze | grep -i '^pydantic_core==')" \
    "$($PY -m pip freeze | grep -i '^pydantic-settings==')" "$($PY -m pip freeze | grep -i '^python-dotenv==')" \
    "$($PY -m pip freeze | grep -i '^annotated-types==')" "$($PY -m pip freeze | grep -i '^typing-inspection==')" \
    "$($PY -m pip freeze | grep -i '^diskcache==')" "$($PY -m pip freeze | grep -i '^typing_extensions==')" \
    "$($PY -m pip freeze | grep -i '^httpx==')" "$($PY -m pip freeze | grep -i '^httpcore==')" \
    "$($PY -m pip freeze | grep -i '^h11==')" "$($PY -m pip freeze | grep -i '^anyio==')" \
    "$($PY -m pip freeze | grep -i '^idna==')" "$($PY -m pip freeze | grep -i '^certifi==')" \
    "$($PY -m pip freeze | grep -i '^sniffio==')"
$PY scripts/gpu_bench.py capture --out .gpu/b/bench-prompts.json
cp scripts/gpu-kit/start.sh .gpu/a/ && cp scripts/gpu-kit/finish.sh .gpu/b/
du -sh .gpu/a .gpu/b
