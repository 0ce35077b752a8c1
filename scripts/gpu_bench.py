"""A lean GPU benchmark for machines that cannot install the whole product (no internet, small uploads).

It needs only `models/`, `usage/pricing.py` and the stdlib-only `ui/bench/core.py`, `ui/bench/native.py` and
`usage/stats.py` from this repository, llama-cpp-python (a CUDA build, or a CPU-only one for comparison),
pydantic-settings, numpy, the model file and, optionally, a `llama-bench` built from the same llama.cpp
source. It replays the exact prompts firstline's bot sends to the model,
captured on a machine that has the whole product (`capture`), so the GPU runs the same requests:

    # where the product is installed (records the prompts of every model-answered dev-set question)
    .venv/bin/python scripts/gpu_bench.py capture --out bench-prompts.json
    # on the GPU machine
    FIRSTLINE_N_GPU_LAYERS=-1 python3 scripts/gpu_bench.py run --prompts bench-prompts.json \
        --llama-bench /path/to/llama-bench --out gpu-report

`run` measures: (a) firstline's model path (`LlamaChatModel.stream`, what the bot calls) and (b) plain
llama-cpp-python `create_chat_completion` decoding the same long prompt, (c) native `llama-bench` on the
same prompt length; compute seconds per request over the replayed requests (as the ledger records them:
prefill + decode), the time to first token of a follow-up turn with and without the cached prefix, and
what a request costs under every default pricing profile. `served` (issue #16) runs the same through a
local llama-server built with CUDA: the chat path's decode against native llama-bench, and 1/4/16/64
concurrent requests. `scripts/gpu-bench.sh` is the full path (`firstline bench` on a CUDA build) for
machines that can install everything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ui.bench.core import median, ratio  # noqa: E402  (ui.bench.core, ui.bench.native, usage.stats: stdlib only)
from usage.stats import percentile  # noqa: E402

# usage.planning.DEFAULT_SECONDS_PER_REQUEST, the default pricing example's compute seconds per request
# (not imported: usage.planning needs sqlite-utils, which the lean GPU run does not carry)
ASSUMED_COMPUTE_S = 3.0
DECODE_QUESTION = (
    "Please write a very long and detailed step-by-step guide, with at least twenty numbered steps, "
    "for setting up a new home router, the Wi-Fi network and every device in a family home."
)
FOLLOW_UPS = (
    "My new router shows a blinking orange light after I plugged it in. What does that mean?",
    "I restarted it twice and the light is still orange. Which cable should I check first?",
    "Should the grey cable go into the DSL port or the LAN port of the router?",
)


# -- capture (needs the whole product) ----------------------------------------------------------------
def capture(args: argparse.Namespace) -> None:
    """Run the dev-set questions through the real bot with a recording fake model; save every model call."""
    import tempfile

    from bot.evaluation import load_questions
    from models.fake import ScriptedChatModel
    from ui.app import build_services

    root = Path(__file__).resolve().parent.parent
    questions = load_questions(root / "bot" / "demo_kb" / "questions" / "dev.jsonl")
    fake = ScriptedChatModel()
    requests: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(Path(tmp), model=fake)
        try:
            for i, q in enumerate(questions):
                before = len(fake.history)
                for _ in services.bot.stream_message(f"capture-{i}", q.question, q.lang):
                    pass
                calls = fake.history[before:]
                if calls:
                    requests.append(
                        {
                            "question": q.question,
                            "lang": q.lang,
                            "calls": [
                                {
                                    "messages": [{"role": m.role, "content": m.content} for m in c.messages],
                                    "max_tokens": c.max_tokens,
                                    "grammar": c.grammar,
                                }
                                for c in calls
                            ],
                        }
                    )
            conv = "capture-follow-up"
            turns = []
            for text in (DECODE_QUESTION, *FOLLOW_UPS):
                before = len(fake.history)
                for _ in services.bot.stream_message(conv if text != DECODE_QUESTION else "capture-decode", text, "en"):
                    pass
                msgs = fake.history[before].messages if len(fake.history) > before else []
                turns.append([{"role": m.role, "content": m.content} for m in msgs])
        finally:
            services.close()
    doc = {
        "source": "bot/demo_kb/questions/dev.jsonl through the bot (first turns)",
        "questions": len(questions),
        "requests": requests,
        "decode": turns[0],
        "follow_up": turns[1:],
        "max_tokens_default": services.bot.max_tokens,
    }
    Path(args.out).write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"{len(requests)} of {len(questions)} questions call the model; prompts saved to {args.out}")


# -- run (lean: models/ + llama-cpp-python) -------------------------------------------------------------
def msgs(raw: list[dict[str, str]]) -> list[Any]:
    from models.types import ChatMessage

    return [ChatMessage(m["role"], m["content"]) for m in raw]  # type: ignore[arg-type]


def timed_stream(gen: Any) -> tuple[float | None, int, float, Any]:
    """Consume a Generation; (time to first piece, pieces, total seconds, usage)."""
    t0 = time.perf_counter()
    first = None
    n = 0
    for _ in gen:
        n += 1
        if first is None:
            first = time.perf_counter() - t0
    return first, n, time.perf_counter() - t0, gen.usage


def decode_runs(model: Any, messages: list[Any], gen_tokens: int, reps: int) -> dict[str, Any]:
    """(a) our model path and (b) plain create_chat_completion on the same prompt and token budget."""
    import llama_cpp

    a_tps, a_ttft, b_tps, b_ttft = [], [], [], []
    plain = llama_cpp.Llama(model_path=str(model.path), verbose=False, **model.load_kwargs)
    raw = [{"role": m.role, "content": m.content} for m in messages]
    for _ in range(reps + 1):  # the first round warms up
        model.reset_cache()
        ttft, _, total, usage = timed_stream(model.stream(messages, max_tokens=gen_tokens, temperature=0.0))
        tps_a = (usage.completion_tokens - 1) / usage.decode_s if usage.decode_s > 0 else None

        def plain_run(st: Any = model.settings) -> tuple[float, float | None, float | None]:
            # the same sampling chain as ours (penalties included), greedy
            plain.reset()
            t0 = time.perf_counter()
            first = None
            n = 0
            for chunk in plain.create_chat_completion(
                raw, max_tokens=gen_tokens, temperature=0.0, top_k=st.top_k, top_p=st.top_p, min_p=st.min_p,
                repeat_penalty=st.repeat_penalty, stream=True,
            ):  # fmt: skip
                if chunk["choices"][0]["delta"].get("content"):
                    n += 1
                    if first is None:
                        first = time.perf_counter()
            end = time.perf_counter()
            return t0, first, (n - 1) / (end - first) if first and n > 1 else None

        # on the model's compute thread, as ours runs (one OpenMP team in the process)
        t0, first, tps_b = model.compute(plain_run)
        if _ == 0:
            continue
        a_tps.append(tps_a)
        a_ttft.append(ttft)
        b_tps.append(tps_b)
        b_ttft.append(first - t0 if first else None)
    plain.close()
    return {
        "prompt_tokens": model.count_tokens(messages),
        "gen_tokens": gen_tokens,
        "firstline_tps": median(a_tps),
        "firstline_ttft_s": median(a_ttft),
        "plain_tps": median(b_tps),
        "plain_ttft_s": median(b_ttft),
        "reps": reps,
    }


def native_runs(binary: str, model: Any, n_prompt: int, n_gen: int, reps: int) -> dict[str, Any]:
    """(c) through ui.bench.native.NativeBench: the very llama-bench invocation `firstline bench` uses."""
    from ui.bench.core import Bench, BenchOptions
    from ui.bench.native import NativeBench

    native = NativeBench(Bench(BenchOptions(llama_bench=Path(binary))), model, n_prompt, n_gen)
    try:
        r = native.round(reps)
    except RuntimeError as exc:
        return {"commands": native.commands, "error": str(exc)}
    rec = native.records[0] if native.records else {}
    return {
        "commands": native.commands,
        "pp_tps": r.get("pp_tps"),
        "tg_tps": r.get("tg_tps"),
        "ttft_s": r.get("pp_s"),
        **{k: rec.get(k) for k in ("build_commit", "gpu_info", "backends")},
    }


def replay(model: Any, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Each captured request's model calls, uncached (a new conversation), as the ledger would count them."""
    per_request = []
    for req in requests:
        model.reset_cache()
        compute = 0.0
        tokens_in = tokens_out = 0
        for call in req["calls"]:
            _, _, _, usage = timed_stream(
                model.stream(msgs(call["messages"]), max_tokens=call["max_tokens"], grammar=call.get("grammar"))
            )
            compute += usage.compute_s
            tokens_in += usage.prompt_tokens
            tokens_out += usage.completion_tokens
        per_request.append({"compute_s": compute, "prompt_tokens": tokens_in, "completion_tokens": tokens_out})
    cs = [r["compute_s"] for r in per_request]
    return {
        "requests": len(per_request),
        "compute_s_mean": statistics.fmean(cs) if cs else None,
        "compute_s_p50": percentile(cs, 50),
        "compute_s_p95": percentile(cs, 95),
        "compute_s_max": max(cs) if cs else None,
        "prompt_tokens_mean": statistics.fmean([r["prompt_tokens"] for r in per_request]) if cs else None,
        "completion_tokens_mean": statistics.fmean([r["completion_tokens"] for r in per_request]) if cs else None,
    }


def follow_up(model: Any, turns: list[list[dict[str, str]]], reps: int) -> dict[str, Any]:
    """TTFT of the last follow-up with its prefix (system prompt + history) in the KV cache and after a reset.

    The captured history holds the recording model's answers, so the prefix is primed by prefilling the
    follow-up's own prompt without its last message (what a live conversation leaves in the cache when
    the prompt layout keeps system prompt and history stable)."""
    cached, cold = [], []
    last = msgs(turns[-1])
    for _ in range(reps):
        model.reset_cache()
        timed_stream(model.stream(last[:-1], max_tokens=1))
        ttft, _, _, usage = timed_stream(model.stream(last, max_tokens=4))
        cached.append((ttft, usage.cached_tokens))
        model.reset_cache()
        ttft, _, _, _ = timed_stream(model.stream(last, max_tokens=4))
        cold.append(ttft)
    c = median([t for t, _ in cached])
    u = median(cold)
    return {"prompt_tokens": model.count_tokens(last), "cached_tokens": cached[-1][1], "ttft_cached_s": c,
            "ttft_uncached_s": u, "speedup": ratio(u, c)}  # fmt: skip


def costs(compute_s: float | None) -> list[dict[str, Any]]:
    from usage import pricing

    if compute_s is None:
        return []
    return [
        {"profile": p.name, "kind": p.kind, "currency": p.currency,
         "per_request": float(p.request_cost(compute_s)), "per_request_at_3s": float(p.request_cost(ASSUMED_COMPUTE_S))}
        for p in pricing.DEFAULT_PROFILES
    ]  # fmt: skip


def run(args: argparse.Namespace) -> None:
    # llama_cpp before numpy: on the CUDA image we measured on, loading a model segfaulted when that
    # image's numpy had been imported first (a shared-library clash); this order avoids it.
    import llama_cpp

    from models.llama import LlamaChatModel
    from models.settings import ModelSettings

    doc = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
    settings = ModelSettings()
    model = LlamaChatModel(settings)
    out: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "model": {"id": model.model_id, "device": model.device, "load_s": model.load_s, **model.load_kwargs},
    }
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        out["machine"]["gpu"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["machine"]["gpu"] = None
    step = lambda s: print(f"gpu_bench: {s}", file=sys.stderr, flush=True)  # noqa: E731
    step(f"model on {model.device}; decode runs ...")
    out["decode"] = decode_runs(model, msgs(doc["decode"]), args.gen_tokens, args.reps)
    if args.llama_bench:
        step("native llama-bench ...")
        out["native"] = native_runs(args.llama_bench, model, out["decode"]["prompt_tokens"], args.gen_tokens, args.reps)
    d, n = out["decode"], out.get("native", {})
    out["ratios"] = {
        "firstline_vs_plain": d["firstline_tps"] / d["plain_tps"] if d["firstline_tps"] and d["plain_tps"] else None,
        "firstline_vs_native": d["firstline_tps"] / n["tg_tps"] if d["firstline_tps"] and n.get("tg_tps") else None,
    }
    step("follow-up turns ...")
    out["follow_up"] = follow_up(model, doc["follow_up"], args.reps)
    requests = doc["requests"][: args.requests] if args.requests else doc["requests"]
    step(f"replaying {len(requests)} requests ...")
    out["replay"] = replay(model, requests)
    out["costs"] = costs(out["replay"]["compute_s_mean"])
    out["assumed_compute_s_per_request"] = ASSUMED_COMPUTE_S
    model.close()
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "gpu-bench.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    (dest / "gpu-bench.md").write_text(markdown(out), encoding="utf-8")
    print(markdown(out))


def served(args: argparse.Namespace) -> None:
    """Issue #16 on a GPU: firstline's chat path through a local llama-server (models.llama_server, the same
    client the product uses) against native llama-bench on the same GPU, and 1/4/16/64 concurrent requests."""
    import threading

    from models.llama_server import LlamaServerEngine
    from models.settings import ModelSettings
    from ui.bench.core import decode_rate

    doc = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
    step = lambda s: print(f"gpu_bench served: {s}", file=sys.stderr, flush=True)  # noqa: E731
    settings = ModelSettings(engine="llama-server", engine_slots=args.slots, temperature=0.0,
                             llama_server_bin=Path(args.llama_server))  # fmt: skip
    engine = LlamaServerEngine(settings)
    out: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": engine.device, "slots": args.slots, "argv": engine.argv[1:],
    }  # fmt: skip
    step(f"llama-server on {engine.device}, {args.slots} slots; decode runs ...")
    rates, ttfts, n_prompt = [], [], 0
    for _ in range(args.reps):
        t0 = time.perf_counter()
        gen = engine.stream(msgs(doc["decode"]), max_tokens=args.gen_tokens, temperature=0.0)
        times = [time.perf_counter() for _ in gen]
        u = gen.usage
        n_prompt = u.prompt_tokens if u else 0
        rates.append(decode_rate(times, u.completion_tokens if u else None))
        ttfts.append(times[0] - t0 if times else None)
    out["decode"] = {"served_tps": median(rates), "served_ttft_s": median(ttfts), "prompt_tokens": n_prompt,
                     "runs": rates}  # fmt: skip
    if args.llama_bench:
        step("native llama-bench ...")
        from models.llama import LlamaChatModel  # only for its load settings (NativeBench reads them)

        native = native_runs(args.llama_bench, LlamaChatModel(ModelSettings()), n_prompt, args.gen_tokens, args.reps)
        out["native"] = native
        out["served_vs_native"] = ratio(out["decode"]["served_tps"], native.get("tg_tps"))
    requests = doc["requests"][: args.requests] if args.requests else doc["requests"]
    out["levels"] = []
    for level in (1, 4, 16, 64):
        step(f"{level} concurrent requests ...")
        done: list[Any] = []
        lock = threading.Lock()

        def worker(i: int, level: int = level, done: list[Any] = done, lock: threading.Lock = lock) -> None:
            for k in range(i, len(requests), level):
                t0 = time.perf_counter()
                gen = engine.stream(msgs(requests[k]["messages"]), max_tokens=requests[k].get("max_tokens"))
                times = [time.perf_counter() for _ in gen]
                with lock:
                    done.append((times[0] - t0 if times else None, time.perf_counter() - t0, gen.usage))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(level)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        tokens = sum(u.completion_tokens for _, _, u in done if u is not None)
        out["levels"].append({
            "sessions": level, "requests": len(done), "wall_s": wall, "total_tps": tokens / wall if wall else None,
            "ttft_p50_s": percentile([x for x, _, _ in done if x is not None], 50),
            "ttft_p95_s": percentile([x for x, _, _ in done if x is not None], 95),
            "latency_p95_s": percentile([x for _, x, _ in done], 95),
        })  # fmt: skip
    engine.close()
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "gpu-served.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(json.dumps(out, indent=1))


def f(x: Any, nd: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{nd}f}"


def markdown(o: dict[str, Any]) -> str:
    d, n, r, fu = o["decode"], o.get("native", {}), o["replay"], o["follow_up"]
    lines = [
        f"# firstline GPU benchmark ({o['model']['device']}, {o['machine'].get('gpu') or 'no GPU'})",
        "",
        f"llama-cpp-python {o['llama_cpp_python']} (GPU offload: {o['gpu_offload']}), model {o['model']['id']}, "
        f"n_gpu_layers {o['model']['n_gpu_layers']}, flash attention {o['model']['flash_attn']}, "
        f"{o['machine']['cpus']} CPUs, Python {o['machine']['python']}.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| decode, firstline model path | {f(d['firstline_tps'])} tok/s |",
        f"| decode, plain llama-cpp-python create_chat_completion | {f(d['plain_tps'])} tok/s |",
        f"| decode, native llama-bench (-d {d['prompt_tokens']}) | {f(n.get('tg_tps'))} tok/s |",
        f"| firstline / plain | {f(o['ratios']['firstline_vs_plain'], 3)} |",
        f"| firstline / native | {f(o['ratios']['firstline_vs_native'], 3)} |",
        f"| TTFT ({d['prompt_tokens']}-token prompt): firstline / plain / native prefill | "
        f"{f((d['firstline_ttft_s'] or 0) * 1000)} / {f((d['plain_ttft_s'] or 0) * 1000)} / "
        f"{f((n.get('ttft_s') or 0) * 1000)} ms |",
        f"| follow-up TTFT, stable prefix cached / uncached ({fu['prompt_tokens']} tokens, "
        f"{fu['cached_tokens']} cached) | "
        f"{f(fu['ttft_cached_s'] * 1000)} / {f(fu['ttft_uncached_s'] * 1000)} ms ({f(fu['speedup'])}x) |",
        f"| compute s per request (mean / p50 / p95 over {r['requests']} replayed requests) | "
        f"{f(r['compute_s_mean'], 3)} / {f(r['compute_s_p50'], 3)} / {f(r['compute_s_p95'], 3)} s |",
        f"| tokens per request (prompt / answer, mean) | {f(r['prompt_tokens_mean'], 0)} / "
        f"{f(r['completion_tokens_mean'], 0)} |",
        f"| the default pricing example assumes | {o['assumed_compute_s_per_request']:.0f} s per request |",
        "",
        "| profile | kind | per request (measured) | per request at 3 s |",
        "| --- | --- | --- | --- |",
    ]
    for c in o["costs"]:
        lines.append(f"| {c['profile']} | {c['kind']} | {c['per_request']:.6f} {c['currency']} | "
                     f"{c['per_request_at_3s']:.6f} {c['currency']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture", help="record the bot's model prompts (needs the whole product)")
    c.add_argument("--out", default="bench-prompts.json")
    r = sub.add_parser("run", help="benchmark the model path on this machine (CPU or GPU)")
    r.add_argument("--prompts", default="bench-prompts.json")
    r.add_argument("--out", default="gpu-report")
    r.add_argument("--llama-bench", default=None)
    r.add_argument("--gen-tokens", type=int, default=128)
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--requests", type=int, default=0, help="replay only the first N requests (0 = all)")
    v = sub.add_parser("served", help="issue #16: the chat path through llama-server vs native, concurrency")
    v.add_argument("--prompts", default="bench-prompts.json")
    v.add_argument("--out", default="gpu-report")
    v.add_argument("--llama-server", required=True, help="a llama-server built with CUDA from the same source")
    v.add_argument("--llama-bench", default=None)
    v.add_argument("--slots", type=int, default=16)
    v.add_argument("--gen-tokens", type=int, default=128)
    v.add_argument("--reps", type=int, default=5)
    v.add_argument("--requests", type=int, default=0, help="replay only the first N requests (0 = all)")
    args = p.parse_args()
    {"capture": capture, "run": run, "served": served}[args.cmd](args)


if __name__ == "__main__":
    main()
