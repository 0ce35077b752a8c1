"""Native llama.cpp for the benchmark: `llama-bench`, built by scripts/build-llama-bench.sh from the
llama.cpp source llama-cpp-python vendors, run with the settings llama-cpp-python loaded the model with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ui.bench.core import Bench, fmt, median

LLAMA_BENCH_TIMEOUT_S = 300
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "firstline"


# -- native llama.cpp ---------------------------------------------------------------------------------
def default_llama_bench() -> Path:
    """Where scripts/build-llama-bench.sh puts llama-bench for the installed llama-cpp-python."""
    from importlib.metadata import version

    return CACHE_DIR / f"llama.cpp-{version('llama-cpp-python')}" / "build" / "bin" / "llama-bench"


def find_llama_bench(explicit: Path | None) -> Path | None:
    """The llama-bench binary: --llama-bench, else the build script's cache, else PATH."""
    for candidate in (explicit, default_llama_bench()):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("llama-bench")
    return Path(found) if found else None


def parse_llama_bench(text: str) -> list[dict[str, Any]]:
    """llama-bench `-o json` output: a list of test records (stderr noise before it is ignored)."""
    start = text.find("[")
    if start < 0:
        return []
    data = json.loads(text[start:])
    return data if isinstance(data, list) else []


def _fa(record: dict[str, Any]) -> bool:
    return str(record.get("flash_attn", 0)).lower() in ("1", "true", "on", "enabled")


def pick(
    records: list[dict[str, Any]], *, n_prompt: int, n_gen: int, threads: int | None = None, fa: bool = False
) -> dict[str, Any] | None:
    """The record of one llama-bench test."""
    for rec in records:
        if (
            int(rec.get("n_prompt", -1)) == n_prompt
            and int(rec.get("n_gen", -1)) == n_gen
            and (threads is None or int(rec.get("n_threads", -1)) == threads)
            and _fa(rec) == fa
        ):
            return rec
    return None


def tokens_per_s(record: dict[str, Any] | None) -> float | None:
    """Median tokens/s over llama-bench's repetitions."""
    if not record:
        return None
    samples = record.get("samples_ts") or [record.get("avg_ts")]
    return median([float(s) for s in samples if s is not None])


class NativeBench:
    """llama-bench on the model with the settings llama-cpp-python loaded it with (flash attention off)."""

    def __init__(self, bench: Bench, model: Any, n_prompt: int, n_gen: int) -> None:
        self.bench = bench
        self.binary = find_llama_bench(bench.options.llama_bench)
        self.n_prompt, self.n_gen = n_prompt, n_gen
        kw = model.load_kwargs
        self.threads = int(kw["n_threads"])
        self.fa = "1" if kw.get("flash_attn") else "0"  # as the model was loaded
        ngl = int(kw["n_gpu_layers"])
        self.common = [
            "-m", str(model.path),
            "-b", str(kw["n_batch"]),
            "-ub", str(min(int(kw["n_batch"]), 512)),  # llama-cpp-python: n_ubatch = min(n_batch, 512)
            "-ngl", str(999 if ngl < 0 else ngl),
            # the same weight buffers as the model: without extra buffer types where the AMX guard is on
            "--repack", "1" if kw.get("use_extra_bufts", True) else "0",
            "-o", "json",
        ]  # fmt: skip
        self.commands: list[str] = []
        self.records: list[dict[str, Any]] = []
        if self.binary is None:
            bench.note(
                "native llama.cpp not measured: llama-bench is not built (run `scripts/build-llama-bench.sh` "
                "or `make bench`, or pass --llama-bench PATH)."
            )

    def _run(self, extra: list[str]) -> list[dict[str, Any]]:
        assert self.binary is not None
        cmd = [str(self.binary), *self.common, *extra]
        if " ".join(cmd[1:]) not in self.commands:
            self.commands.append(" ".join(cmd[1:]))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LLAMA_BENCH_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"llama-bench took over {LLAMA_BENCH_TIMEOUT_S}s (machine too busy?)") from exc
        if proc.returncode != 0:
            raise RuntimeError(f"llama-bench failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
        records = parse_llama_bench(proc.stdout)
        self.records.extend(records)
        return records

    def round(self, reps: int = 1, fa: str | None = None, threads: str | None = None) -> dict[str, float | None]:
        """Prompt processing of n_prompt tokens, and decoding n_gen tokens after them (-d n_prompt)."""
        if self.binary is None:
            return {}
        fa = fa or self.fa
        t = threads or str(self.threads)
        pp = self._run(["-fa", fa, "-r", str(reps), "-t", t, "-p", str(self.n_prompt), "-n", "0"])
        tg = self._run(
            ["-fa", fa, "-r", str(reps), "-t", t, "-p", "0", "-n", str(self.n_gen), "-d", str(self.n_prompt)]
        )
        pp_tps = tokens_per_s(pick(pp, n_prompt=self.n_prompt, n_gen=0, fa=fa == "1"))
        return {
            "pp_tps": pp_tps,
            "pp_s": self.n_prompt / pp_tps if pp_tps else None,
            "tg_tps": tokens_per_s(pick(tg, n_prompt=0, n_gen=self.n_gen, fa=fa == "1")),
        }

    def extras(self) -> None:
        """Flash attention on and off back to back, and one thread: what the settings are worth (full runs)."""
        if self.binary is None:
            return
        bench, reps = self.bench, 2
        try:
            on = self.round(reps, fa="1")
            off = self.round(reps, fa="0")
        except RuntimeError as exc:
            bench.note(f"native extras skipped: {exc}")
            return
        bench.add(
            "native.tg.flash_attn_on.tokens_per_s", on.get("tg_tps"), "tok/s", "llama-bench decode, flash attention on"
        )
        bench.add(
            "native.tg.flash_attn_off.tokens_per_s",
            off.get("tg_tps"),
            "tok/s",
            "llama-bench decode, flash attention off",
        )
        bench.add(
            "native.pp.flash_attn_on.tokens_per_s", on.get("pp_tps"), "tok/s", "llama-bench prompt, flash attention on"
        )
        bench.add(
            "native.pp.flash_attn_off.tokens_per_s",
            off.get("pp_tps"),
            "tok/s",
            "llama-bench prompt, flash attention off",
        )
        one = None
        if self.threads > 1:
            try:
                one = self.round(reps, threads="1").get("tg_tps")
            except RuntimeError as exc:
                bench.note(f"native one-thread run skipped: {exc}")
        bench.add("native.tg.one_thread.tokens_per_s", one, "tok/s", "llama-bench decode, 1 thread")
        if on.get("tg_tps") and off.get("tg_tps"):
            bench.note(
                f"Flash attention (FIRSTLINE_FLASH_ATTN, on by default; llama-cpp-python's own default is off, "
                f"llama.cpp's auto), back to back: decode {fmt(off['tg_tps'], 1)} tok/s off, {fmt(on['tg_tps'], 1)} "
                f"on; prompt processing {fmt(off['pp_tps'], 0)} tok/s off, {fmt(on['pp_tps'], 0)} on. All "
                f"comparisons above use the setting the model was loaded with (-fa {self.fa})."
            )

    def describe(self) -> None:
        if self.binary is None:
            return
        self.bench.details["llama_bench"] = {
            "binary": str(self.binary),
            "commands": self.commands,
            "build_commit": self.records[0].get("build_commit") if self.records else None,
            "cpu_info": self.records[0].get("cpu_info") if self.records else None,
        }
        self.bench.note(
            f"native: `llama-bench {' '.join(self.common)} -fa {self.fa} -t {self.threads} -p {self.n_prompt} -n 0` "
            f"(prompt) and `... -p 0 -n {self.n_gen} -d {self.n_prompt}` (decode after the prompt, as in the "
            f"chat runs); one repetition per round, interleaved with the Python runs."
        )
