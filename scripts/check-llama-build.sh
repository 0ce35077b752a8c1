#!/usr/bin/env bash
# Make sure the installed llama-cpp-python fits the CPU of this machine; rebuild it here when it does not.
#
# llama-cpp-python has no CPU wheel on PyPI: pip compiles it with GGML_NATIVE (-march=native) and caches the
# wheel. A cache shared between machines (a CI cache, a copied ~/.cache/pip, a golden image) hands a wheel
# compiled on one CPU to another; on an older CPU it dies with SIGILL as soon as llama.cpp loads. The probe
# (`python -m models.worker --probe`) loads llama.cpp in a child process and compares the instruction sets
# it was compiled with against /proc/cpuinfo. On a mismatch (or a crash) the cached wheel is dropped and
# llama-cpp-python is compiled for this CPU (~9 minutes on 2 cores), then probed again.
#
#   scripts/check-llama-build.sh        # PYTHON=.venv/bin/python by default; called by `make install`
set -uo pipefail

PY="${PYTHON:-.venv/bin/python}"

probe() {
    "$PY" - <<'PYEOF'
import json, subprocess, sys
done = subprocess.run([sys.executable, "-m", "models.worker", "--probe"], capture_output=True, text=True)
if done.returncode != 0:
    from models.supervisor import exit_cause
    print(f"llama.cpp does not load on this CPU: {exit_cause(done.returncode)}")
    sys.exit(1)
report = json.loads(done.stdout.strip().splitlines()[-1])
if report["missing_instructions"]:
    print(f"llama-cpp-python was compiled for another CPU: it uses {', '.join(report['missing_instructions'])}, "
          f"which {report['cpu_model']} lacks")
    sys.exit(1)
print(f"llama-cpp-python fits this CPU ({report['cpu_model']}); extra CPU buffers {report['extra_buffers_reason']}")
PYEOF
}

if message="$(probe)"; then
    echo "$message" >&2
    exit 0
fi
echo "$message" >&2
VERSION="$("$PY" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')"
echo "rebuilding llama-cpp-python ${VERSION} for this CPU (~9 minutes on 2 cores) ..." >&2
"$PY" -m pip cache remove 'llama_cpp_python*' >/dev/null 2>&1 || true
"$PY" -m pip install --quiet --force-reinstall --no-deps --no-binary llama-cpp-python "llama-cpp-python==${VERSION}"
if message="$(probe)"; then
    echo "$message" >&2
    exit 0
fi
echo "$message" >&2
echo "llama-cpp-python still does not work on this CPU after a rebuild; see README, Requirements" >&2
exit 1
