#!/usr/bin/env bash
# device call 1: unpack, start the CUDA build of the vendored llama.cpp in the background (setsid)
set -u
G=/tmp/g; mkdir -p $G/src
cp .gpu/a/model.part00 $G/
tar -C $G/src -xJf .gpu/a/llama-src.tar.xz
for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do [ -x $d/nvcc ] && export PATH=$d:$PATH && break; done
which nvcc cmake ninja python3; nvcc --version | tail -2; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
cat > $G/build.sh <<EOS
set -x
cd $G
export PATH=$PATH
T0=\$(date +%s)
cmake -S src -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_APP=OFF \
  && cmake --build build --target llama-bench mtmd llama-server -j \$(nproc)
RC=\$?
echo "build_s=\$((\$(date +%s)-T0))"
echo \$RC > $G/build.rc
EOS
setsid nohup bash $G/build.sh > $G/build.log 2>&1 < /dev/null &
sleep 20; tail -5 $G/build.log
