"""The llama.cpp source tree that llama-cpp-python vendors, fetched once and cached.

llama-cpp-python's sdist carries the exact llama.cpp it was built from (`vendor/llama.cpp`): its
`convert_lora_to_gguf.py` / `convert_hf_to_gguf.py` turn a fine-tuned adapter or model into GGUF files
that this very llama.cpp loads, and scripts/build-llama-tool.sh builds native tools (llama-bench,
llama-server) from it. The sdist comes from PyPI (`pip download --no-binary :all:`, ~75 MB) and is
unpacked into `$XDG_CACHE_HOME/firstline/llama.cpp-VERSION/src`, shared by every checkout and data directory.

    python -m models.llama_source [--dest DIR]    # prints the path of vendor/llama.cpp
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from models.errors import ModelError


class SourceUnavailableError(ModelError):
    """The llama.cpp source could not be fetched (shown to the operator running `firstline tune`)."""


def installed_version() -> str:
    """The version of the installed llama-cpp-python (without importing the native library)."""
    from importlib.metadata import version

    return version("llama-cpp-python")


def cache_root() -> Path:
    """$XDG_CACHE_HOME/firstline (default ~/.cache/firstline)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "firstline"


def default_dest(version: str) -> Path:
    """Where the sdist of `version` is unpacked (the same place scripts/build-llama-tool.sh uses)."""
    return cache_root() / f"llama.cpp-{version}" / "src"


def vendored_llama_cpp(version: str | None = None, dest: Path | None = None) -> Path:
    """The vendor/llama.cpp folder of llama-cpp-python `version` (default: the installed one), fetched on
    first use; raises SourceUnavailableError with the cause when it cannot be fetched."""
    version = version or installed_version()
    dest = dest or default_dest(version)
    tree = dest / "vendor" / "llama.cpp"
    if (tree / "convert_lora_to_gguf.py").is_file() and (tree / "CMakeLists.txt").is_file():
        return tree
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={version}", "-d", tmp]  # fmt: skip
        print(f"fetching the llama-cpp-python {version} sdist (it vendors llama.cpp)...", file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not archives:
            cause = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no archive"]
            raise SourceUnavailableError(
                f"could not download the llama-cpp-python {version} source from PyPI: {cause[0]}"
            )
        staging = Path(tmp) / "src"
        with tarfile.open(archives[0]) as archive:
            archive.extractall(staging, filter="data")
        (top,) = [p for p in staging.iterdir() if p.is_dir()]
        if (tree / "convert_lora_to_gguf.py").is_file():  # another process unpacked it meanwhile
            return tree
        if dest.exists():  # a partial earlier attempt
            shutil.rmtree(dest)
        top.rename(dest)  # atomic on one file system: another process sees all of it or nothing
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=None, help="llama-cpp-python version (default: installed)")
    parser.add_argument("--dest", type=Path, default=None, help="unpack here (default: the firstline cache)")
    args = parser.parse_args(argv)
    try:
        print(vendored_llama_cpp(args.version, args.dest))
    except SourceUnavailableError as exc:
        print(f"llama_source: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
