"""The fine-tuning benchmark behind `make bench-tune`: a full `firstline tune` of the demo help centre, timed,
and the two ways of serving its result compared (GGUF adapter over the Q4_1 base vs. merged into the base
and re-quantized). Writes report.md and report.json (default: bench-report/tune/).

    .venv/bin/python scripts/bench_tune.py [--data-dir DIR] [--out DIR] [--version vN] [--answers N]

Measured per variant on the version's held-out examples (the same ones the gate uses): llama.cpp's loss on
the reference answers (answer tokens, perplexity), greedy held-out answers scored like the gate scores them
(reference F1, groundedness, garbled words, abstention), decode speed, load time and file size.
A benchmark prints figures and writes a report; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def run_tune(data_dir: Path, extra: list[str]) -> tuple[dict[str, Any], float]:
    """`firstline tune --json` as an operator runs it; returns its JSON and the wall-clock seconds."""
    env = {**os.environ, "FIRSTLINE_DATA_DIR": str(data_dir)}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ui.cli", "tune", "--json", *extra], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, text=True)  # fmt: skip
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"firstline tune failed (exit {done.returncode})")
    return json.loads(done.stdout), wall


def tune_seconds(data_dir: Path, request_id: str) -> float:
    """The seconds the tune's ledger row (route `training`) recorded, for a version tuned earlier."""
    from usage.db import connect

    db = connect(data_dir / "firstline.db", readonly=True)
    try:
        row = db.execute("SELECT latency_s FROM requests WHERE request_id = ?", [request_id]).fetchone()
    finally:
        db.close()
    return float(row[0]) if row and row[0] is not None else 0.0


def decode_speed(model: Any, messages: Any, tokens: int = 128) -> float:
    gen = model.stream(messages, max_tokens=tokens, temperature=0.0)
    "".join(gen)
    usage = gen.usage
    return usage.completion_tokens / usage.decode_s if usage and usage.decode_s else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-report" / "tune")
    parser.add_argument("--version", default=None, help="compare this recorded version instead of tuning anew")
    parser.add_argument("--answers", type=int, default=16, help="held-out answers per variant")
    parser.add_argument("--tune-args", default="", help="extra arguments for firstline tune")
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="firstline-bench-tune-"))
    os.environ["FIRSTLINE_DATA_DIR"] = str(data_dir)
    report: dict[str, Any] = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": "none"},
                              "data_dir": str(data_dir)}  # fmt: skip
    try:
        report["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                          text=True).stdout.strip()  # fmt: skip
    except OSError:
        report["commit"] = ""
    if args.version is None:
        tuned, wall = run_tune(data_dir, args.tune_args.split())
        report["tune"] = {"wall_s": round(wall, 1), "output": tuned}
        version = tuned["version"]
        print(f"full tune: {wall / 60:.1f} min (version {version})", file=sys.stderr)
    else:
        version = args.version

    from bot.tuning.pipeline import evaluate_version, recorded_gate_examples
    from bot.tuning.registry import ModelRegistry
    from models.gguf_export import answer_nll, export_merged, quantize
    from models.llama import LlamaChatModel
    from models.settings import ModelSettings
    from models.tuning import ExampleEncoder
    from ui.cli.tune import tune_payload, tuning_context

    with tuning_context(data_dir) as ctx:
        registry: ModelRegistry = ctx["registry"]
        recorded = registry.get(version)
        if "tune" not in report and "loss" in recorded.metrics:  # a version tuned earlier: its recorded figures
            seconds = tune_seconds(data_dir, recorded.request_id)
            report["tune"] = {"wall_s": round(seconds, 1), "from_ledger": True,
                              "output": tune_payload(recorded, recorded.metrics, seconds)}  # fmt: skip
        folder = data_dir / "models" / version
        gated = recorded_gate_examples(data_dir, recorded)
        answered = gated[: args.answers]
        base_path = Path(recorded.base_path)
        encoder = ExampleEncoder(base_path)
        try:
            encoded = [encoder.encode(ctx["build_prompt"](e.question, e.lang, e.sources), e.answer) for e in gated]
        finally:
            encoder.close()
        variants: dict[str, tuple[Path, Path | None]] = {
            "base (Q4_1)": (base_path, None),
            "adapter (Q4_1 base + f16 LoRA GGUF)": (base_path, registry.adapter_file(recorded)),
        }
        work = folder / "merged"
        work.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        adapter_file = registry.adapter_file(recorded)
        f16 = export_merged(base_path, adapter_file, work / "merged-f16.gguf", "f16")
        merge_s = time.perf_counter() - t0
        q8 = quantize(f16, work / "merged-q8_0.gguf", "Q8_0")
        q41 = quantize(f16, work / "merged-q4_1.gguf", "Q4_1")
        variants["merged (adapted tensors f16, the rest Q4_1)"] = (f16, None)
        variants["merged, Q8_0"] = (q8, None)
        variants["merged, re-quantized to Q4_1"] = (q41, None)
        report["merge_s"] = round(merge_s, 1)
        settings = ModelSettings(temperature=0.0, model_sha256="skip", max_tokens=160)
        rows = {}
        prompt = ctx["build_prompt"](gated[0].question, gated[0].lang, gated[0].sources)
        for name, (model_path, adapter) in variants.items():
            print(f"measuring {name}", file=sys.stderr)
            nll = answer_nll(model_path, encoded, adapter)
            t0 = time.perf_counter()
            options = {"lora_path": str(adapter)} if adapter else {}
            model = LlamaChatModel(settings.model_copy(update={"model_path": model_path}), load_options=options,
                                   model_id=name)  # fmt: skip
            load_s = time.perf_counter() - t0
            speed = decode_speed(model, prompt)
            figures = evaluate_version(model, answered, ctx["build_prompt"], ctx["scorer"], progress=False)
            model.close()
            size = model_path.stat().st_size + (adapter.stat().st_size if adapter else 0)
            rows[name] = {"heldout_nll": round(nll, 4), "heldout_ppl": round(2.718281828 ** nll, 3),
                          "decode_tok_s": round(speed, 1), "load_s": round(load_s, 2),
                          "bytes": size, "answers": figures}  # fmt: skip
            print(json.dumps({name: rows[name]}, indent=1), file=sys.stderr)
        report["variants"] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    (args.out / "report.md").write_text(markdown(report))
    print((args.out / "report.md").read_text())
    return 0


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Fine-tuning benchmark", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, no GPU. "
             f"Commit {report.get('commit', '')}.", ""]  # fmt: skip
    tune = report.get("tune")
    if tune:
        out = tune["output"]
        lines += [
            f"**Full `firstline tune` of the demo help centre: {tune['wall_s'] / 60:.1f} minutes** "
            f"{'as its ledger row recorded it' if tune.get('from_ledger') else 'wall clock'} "
            f"({out['train_examples']} training / {out['heldout_examples']} held-out examples, best epoch "
            f"{out['best_epoch']} of {len(out['epochs'])}; held-out perplexity {out['heldout_ppl_base']:.3f} -> "
            f"{out['heldout_ppl_tuned']:.3f}).",
            "",
            "| held-out answers | base | tuned |",
            "| --- | --- | --- |",
        ]
        for key in ("reference_f1", "grounded", "garbled_rate", "garbled_rate_de", "lang_ok", "invented_facts",
                    "abstention", "false_abstention", "mean_answer_tokens"):  # fmt: skip
            b, t = out["metrics"]["base"].get(key), out["metrics"]["tuned"].get(key)
            lines.append(f"| {key} | {_cell(b)} | {_cell(t)} |")
        verdict = out["verdict_vs_base"]
        lines += ["", f"Better than the base by the gate: {'yes' if verdict['better'] else 'no'} "
                      f"({'; '.join(verdict['reasons'])})", ""]  # fmt: skip
    lines += [f"## Adapter or merge (merge took {report.get('merge_s', 0):.1f} s)", "",
              "| variant | held-out ppl | reference F1 | grounded | garbled (de) | abstention | decode tok/s | MB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, row in report.get("variants", {}).items():
        a = row["answers"]
        answers = [_cell(a.get(k)) for k in ("reference_f1", "grounded", "garbled_rate_de", "abstention")]
        cells = [f"{row['heldout_ppl']:.3f}", *answers, f"{row['decode_tok_s']:.1f}", f"{row['bytes'] / 1e6:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
