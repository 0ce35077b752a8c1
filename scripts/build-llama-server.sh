#!/usr/bin/env bash
# Build native `llama-server` from the llama.cpp source llama-cpp-python vendors (scripts/build-llama-tool.sh),
# cached in ~/.cache/firstline/llama.cpp-<version>/build/bin/; prints its path on the last line.
exec bash "$(dirname "$0")/build-llama-tool.sh" llama-server "$@"
