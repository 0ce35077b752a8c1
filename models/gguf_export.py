"""Fine-tuned weights back into GGUF files llama.cpp serves, and llama.cpp's own loss on them.

Two ways out of a trained LoRA adapter (peft format):

* **adapter** (what `firstline tune` ships): `convert_lora_to_gguf.py` from the llama.cpp source
  llama-cpp-python vendors writes a small GGUF adapter; llama.cpp applies it over the unchanged base at
  load time (`Llama(model_path=base, lora_path=adapter)`).
* **merge**: llama.cpp's `llama-export-lora` adds the GGUF adapter into the base weights and writes one
  F16 model (tokenizer and metadata copied from the base file as they are), optionally re-quantized with
  llama.cpp's own quantizer (Q8_0, or Q4_1, the bundled model's type). Measured against the adapter by
  the tuning benchmark (`make bench-tune`). An earlier version merged in torch (peft `merge_and_unload`) and
  wrote the result with `convert_hf_to_gguf.py`; the tokenizer transformers rebuilds from the GGUF then
  came out as a SentencePiece-style vocabulary, and llama.cpp aborted on the merged file.

`answer_nll` scores examples with llama.cpp itself (mean negative log-likelihood of the answer tokens),
so an export can be checked against the loss torch measured before it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models import cpu, loader
from models.llama_server import llama_tool_path
from models.llama_source import vendored_llama_cpp
from models.tuning import Example, TrainingError

QUANT_TYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}  # llama_ftype values


def _run(argv: Sequence[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a llama.cpp tool or script; a failure is a TrainingError naming `what` with its last output lines."""
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise TrainingError(f"{what} failed: {' | '.join(tail)}")


def _convert(script: str, args: Sequence[str]) -> None:
    source = vendored_llama_cpp()
    _run([sys.executable, str(source / script), *args], script, {**os.environ, "HF_HUB_OFFLINE": "1"})


def export_adapter(adapter_dir: Path, base_config_dir: Path, out: Path, outtype: str = "f16") -> Path:
    """A peft LoRA adapter as a GGUF adapter file llama.cpp loads with `lora_path`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.gguf")
    _convert("convert_lora_to_gguf.py", ["--base", str(base_config_dir), "--outtype", outtype,
                                         "--outfile", str(tmp), str(adapter_dir)])  # fmt: skip
    os.replace(tmp, out)
    return out


def export_merged(base_path: Path, adapter: Path, out: Path, outtype: str = "f16") -> Path:
    """Base + GGUF LoRA adapter merged into one GGUF model file by llama.cpp's `llama-export-lora` (the adapted
    tensors in F16, the others as in the base), then re-quantized to `outtype` (f16: left so; or one of
    QUANT_TYPES such as Q8_0 or Q4_1)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    f16 = out if outtype.lower() == "f16" else out.with_suffix(".f16.tmp.gguf")
    _run([str(export_lora_tool()), "-m", str(base_path), "--lora", str(adapter), "-o", str(f16)], "llama-export-lora")
    if f16 is out:
        return out
    try:
        return quantize(f16, out, outtype.upper())
    finally:
        f16.unlink(missing_ok=True)


def export_lora_tool() -> Path:
    """llama.cpp's `llama-export-lora`, built from the vendored source by scripts/build-llama-tool.sh (cached in
    ~/.cache/firstline next to llama-server; a minute when llama-server was built before)."""
    tool = llama_tool_path("llama-export-lora")
    if tool.is_file():
        return tool
    script = Path(__file__).resolve().parents[1] / "scripts" / "build-llama-tool.sh"
    if not script.is_file():
        raise TrainingError(f"llama-export-lora is not built (looked for {tool}); build it from a firstline checkout "
                            "with scripts/build-llama-tool.sh llama-export-lora")  # fmt: skip
    _run(
        ["bash", str(script), "llama-export-lora"],
        "building llama-export-lora",
        {**os.environ, "PYTHON": sys.executable},
    )
    if not tool.is_file():
        raise TrainingError(f"building llama-export-lora left no binary at {tool}")
    return tool


def quantize(source: Path, out: Path, kind: str = "Q4_1", threads: int | None = None) -> Path:
    """Re-quantize a GGUF model with llama.cpp's quantizer (e.g. an f16 merge to Q4_1)."""
    import llama_cpp

    if kind not in QUANT_TYPES:
        raise TrainingError(f"unknown quantization {kind!r}; one of {', '.join(QUANT_TYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[kind]
    params.nthread = threads or os.cpu_count() or 1
    # llama-export-lora writes only the adapted tensors as F16 and copies the others in the base's type (Q4_1
    # for the bundled model): those are requantized (dequantized and quantized again), which llama.cpp refuses
    # unless allowed
    params.allow_requantize = True
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if code != 0:
        raise TrainingError(f"llama.cpp could not quantize {source.name} to {kind} (code {code})")
    return out


def answer_nll(model_path: Path, examples: Sequence[Example], lora_path: Path | None = None,
               n_ctx: int = 4096) -> float:  # fmt: skip
    """Mean negative log-likelihood per answer token under llama.cpp (with the adapter when given)."""
    import numpy as np

    kwargs: dict[str, Any] = {"n_ctx": n_ctx, "logits_all": True, "n_batch": 512}
    if lora_path is not None:
        kwargs["lora_path"] = str(lora_path)
    # the same guard as the serving model: no extra CPU buffers where they crash (AMX)
    guard = cpu.extra_buffers("auto", cpu.read_cpuinfo(), cpu.build_features(loader.system_info()))
    llm = loader.load_llama(model_path, use_extra_bufts=guard.use_extra_bufts, **kwargs).llm
    total, count = 0.0, 0
    try:
        for ex in examples:
            tokens = list(ex.prompt) + list(ex.answer)
            llm.reset()
            llm.eval(tokens)
            logits = np.asarray(llm.scores[len(ex.prompt) - 1 : len(tokens) - 1], dtype=np.float64)
            peak = logits.max(axis=1, keepdims=True)
            logz = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
            picked = logits[np.arange(len(ex.answer)), list(ex.answer)]
            total += float((logz - picked).sum())
            count += len(ex.answer)
    finally:
        llm.close()
    return total / max(count, 1)


def perplexity(nll: float) -> float:
    return math.exp(nll)
