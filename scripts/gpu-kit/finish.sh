#!/usr/bin/env bash
# device call 2: wait for the build, assemble the model, install the lean deps, run scripts/gpu_bench.py
set -u
G=/tmp/g; export PYTHONUNBUFFERED=1
cat $G/model.part00 .gpu/b/model.part01 > $G/model.gguf
(cd $G && sha256sum model.gguf) ; cat .gpu/b/model.sha256
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/b/whl/*.whl || exit 3
mkdir -p $G/py && tar -C $G/py -xzf .gpu/b/llama_cpp_py.tar.gz
for i in $(seq 1 ${WAIT_S:-420}); do [ -f $G/build.rc ] && break; sleep 1; done
tail -3 $G/build.log; grep build_s $G/build.log
cp $G/build.log $OUT/ 2>/dev/null
[ "$(cat $G/build.rc 2>/dev/null)" = "0" ] || { echo "build not done or failed"; exit 4; }
mkdir -p $G/py/llama_cpp/lib && ln -sf $G/build/bin/*.so* $G/py/llama_cpp/lib/
export LD_LIBRARY_PATH=$G/build/bin PYTHONPATH=/tmp/site:$G/py
export FIRSTLINE_N_GPU_LAYERS=-1 FIRSTLINE_MODEL_PATH=$G/model.gguf FIRSTLINE_MODEL_SHA256=$(cut -d' ' -f1 .gpu/b/model.sha256)
python3 -c 'import llama_cpp; print("offload", llama_cpp.llama_supports_gpu_offload())'
python3 scripts/gpu_bench.py run --prompts .gpu/b/bench-prompts.json --llama-bench $G/build/bin/llama-bench --out $OUT --reps 5 2>&1 | tee $OUT/run.log
# issue #16: the chat path through llama-server (CUDA) vs native, and 1/4/16/64 concurrent requests
python3 scripts/gpu_bench.py served --prompts .gpu/b/bench-prompts.json --llama-server $G/build/bin/llama-server \
    --llama-bench $G/build/bin/llama-bench --out $OUT --reps 5 --slots 16 2>&1 | tee $OUT/served.log
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv
