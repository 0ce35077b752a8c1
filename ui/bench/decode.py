"""Benchmark section: decode speed and time to first token, on the same prompt and token budget, for
(a) firstline's full chat path (Bot.stream_message through the ledger, streaming), (b) plain
llama-cpp-python `create_chat_completion(stream=True)` on a second, identically loaded `Llama`, and
(c) native llama.cpp (`llama-bench`), with the ratios between them and where a token's time goes.

One round runs each of the three once, so a busy machine hits all three alike. llama.cpp's threads spin
at a barrier after every graph node: when another process takes one of the cores, the other thread
waits, and a round can be 10x slower. Rounds where any of the three ran below 80% of its median round
are counted as disturbed and left out of the medians and target ratios (the report says how many).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ui.bench.core import Bench, Shared, decode_rate, fmt, median, ratio, spread
from ui.bench.harness import LONG_QUESTION, ClockedModel, bot_for, close_services, ensure_model, run_turn

UNDISTURBED = 0.8  # a round counts when each of the three reached this share of its median round


@dataclass
class Round:
    """One round's figures: decode tok/s and time to first token (s) of (a), (b) and (c)."""

    a_tps: float | None
    a_ttft: float | None
    b_tps: float | None
    b_ttft: float | None
    c_tps: float | None
    c_ttft: float | None
    c_pp_tps: float | None
    eval_ms: float | None
    sample_ms: float | None
    load: float


def decode(bench: Bench, shared: Shared) -> None:
    """Rounds of (a), (b), (c); medians over undisturbed rounds; per-token breakdown of the gap."""
    from ui.bench import native as bench_native

    opts = bench.options
    model = ensure_model(bench, shared)
    clocked = ClockedModel(model)
    services = bot_for(bench, clocked, "decode")
    services.bot.max_tokens = opts.gen_tokens
    try:
        bench.progress(f"{opts.reps} rounds of (a) firstline, (b) llama-cpp-python, (c) llama-bench ...")
        run_turn(services, "bench-warmup", LONG_QUESTION)
        if clocked.calls:
            shared.messages = clocked.calls[-1]
        n_prompt = model.count_tokens(shared.messages)
        shared.prompt_tokens = n_prompt
        plain_once = plain_chat_runner(shared, model, opts.gen_tokens)
        # (b) runs on the model's compute thread as (a) does: every llama.cpp call in one process on one
        # thread, as in the server (OpenMP keeps a spinning team per calling thread; two teams take turns badly)
        model.compute(plain_once)  # warm-up
        native = bench_native.NativeBench(bench, model, n_prompt, opts.gen_tokens)
        rounds: list[Round] = []
        routes: set[str] = set()
        for i in range(opts.reps):
            load = round(os.getloadavg()[0], 2)
            model.reset_cache()  # every run prefills the whole prompt, as a new conversation would
            turn = run_turn(services, f"bench-decode-{i}", LONG_QUESTION)
            routes.add(str(turn.row.get("route")))
            b_ttft, b_tps, _ = model.compute(plain_once)
            try:
                c = native.round()
            except RuntimeError as exc:
                bench.note(f"native round {i + 1} failed: {exc}")
                c = {}
            eval_ms, sample_ms = model.compute(lambda: per_token_probe(shared, model, opts.gen_tokens))
            rounds.append(
                Round(
                    turn.decode_tps,
                    turn.ttft_s,
                    b_tps,
                    b_ttft,
                    c.get("tg_tps"),
                    c.get("pp_s"),
                    c.get("pp_tps"),
                    eval_ms,
                    sample_ms,
                    load,
                )
            )
            bench.progress(
                f"round {i + 1}: firstline {fmt(turn.decode_tps, 1)}, llama-cpp-python {fmt(b_tps, 1)}, "
                f"native {fmt(c.get('tg_tps'), 1)} tok/s (load {load})"
            )
        if routes != {"model"}:
            bench.note(f"warning: the bench question took route(s) {sorted(routes)}, not only the model")
        report_rounds(bench, rounds, n_prompt)
        if not opts.quick:
            bench.progress("native extras: flash attention, one thread ...")
            native.extras()
        native.describe()
    finally:
        close_services(bench)


def undisturbed(rounds: list[Round]) -> list[Round]:
    """Rounds where (a), (b) and (c) each reached UNDISTURBED of their median round (all if none did).

    Another process only ever slows a round down, so a round far below the typical one was disturbed;
    the median (not the best) is the reference, so one unusually fast round does not reject the rest.
    """
    typical = {k: median([getattr(r, k) for r in rounds]) or 0.0 for k in ("a_tps", "b_tps", "c_tps")}
    kept = [
        r
        for r in rounds
        if all(getattr(r, k) and getattr(r, k) >= UNDISTURBED * typical[k] for k in typical if typical[k] > 0)
    ]
    return kept or rounds


def report_rounds(bench: Bench, rounds: list[Round], n_prompt: int) -> None:
    """Figures, ratios and notes from the rounds."""
    kept = undisturbed(rounds)

    def med(key: str, rs: list[Round] = kept) -> float | None:
        return median([getattr(r, key) for r in rs])

    def paired(x: str, y: str, rs: list[Round] = kept) -> float | None:
        return median([ratio(getattr(r, x), getattr(r, y)) for r in rs])

    ms = lambda s: None if s is None else s * 1000  # noqa: E731
    bench.add("decode.prompt_tokens", n_prompt, "tokens", "prompt length (all three)")
    bench.add("decode.gen_tokens", bench.options.gen_tokens, "tokens", "tokens generated per run")
    bench.add("decode.rounds_used", len(kept), "rounds", f"undisturbed rounds of {len(rounds)} (medians use these)")
    bench.add("decode.firstline.tokens_per_s", med("a_tps"), "tok/s", "(a) firstline full chat path: decode")
    bench.add("decode.llama_cpp_python.tokens_per_s", med("b_tps"), "tok/s", "(b) llama-cpp-python: decode")
    bench.add("decode.native.tokens_per_s", med("c_tps"), "tok/s", "(c) native llama.cpp (llama-bench): decode")
    bench.add("ttft.firstline", ms(med("a_ttft")), "ms", "(a) firstline full chat path: time to first token")
    bench.add("ttft.llama_cpp_python", ms(med("b_ttft")), "ms", "(b) llama-cpp-python: time to first token")
    bench.add("ttft.native", ms(med("c_ttft")), "ms", "(c) native llama.cpp (llama-bench): prompt time")
    bench.add("native.pp.tokens_per_s", med("c_pp_tps"), "tok/s", f"llama-bench prompt processing ({n_prompt} tokens)")
    r_ab, r_ac = paired("a_tps", "b_tps"), paired("a_tps", "c_tps")
    bench.add("decode.ratio.firstline_vs_llama_cpp_python", r_ab, "ratio", "decode firstline / llama-cpp-python")
    bench.add("decode.ratio.firstline_vs_native", r_ac, "ratio", "decode firstline / native")
    bench.add(
        "decode.ratio.llama_cpp_python_vs_native", paired("b_tps", "c_tps"), "ratio", "decode llama-cpp-python / native"
    )
    bench.add(
        "ttft.ratio.firstline_vs_llama_cpp_python",
        paired("a_ttft", "b_ttft"),
        "ratio",
        "TTFT firstline / llama-cpp-python",
    )
    bench.add("ttft.ratio.firstline_vs_native", paired("a_ttft", "c_ttft"), "ratio", "TTFT firstline / native")
    bench.add(
        "decode.ratio.all_rounds.firstline_vs_native",
        paired("a_tps", "c_tps", rounds),
        "ratio",
        "decode firstline / native, all rounds",
    )
    bench.details["decode_rounds"] = [r.__dict__ | {"used": r in kept} for r in rounds]

    eval_ms = min((r.eval_ms for r in rounds if r.eval_ms), default=None)
    sample_ms = min((r.sample_ms for r in rounds if r.sample_ms), default=None)
    bench.add(
        "decode.breakdown.eval_ms", eval_ms, "ms/token", "llama-cpp-python eval() of one token, no sampling (best)"
    )
    bench.add(
        "decode.breakdown.sampling_ms",
        sample_ms,
        "ms/token",
        "llama.cpp sampler chain: penalties, top-k/p, min-p, temperature (best)",
    )
    per = {k: (1000.0 / v if v else None) for k, v in (("a", med("a_tps")), ("b", med("b_tps")), ("c", med("c_tps")))}
    bench.add("decode.breakdown.native_ms", per["c"], "ms/token", "native llama_decode per token")
    bench.add(
        "decode.breakdown.llama_cpp_python_ms", per["b"], "ms/token", "llama-cpp-python streaming chat, per token"
    )
    bench.add("decode.breakdown.firstline_ms", per["a"], "ms/token", "firstline full chat path, per token")

    bench.note(
        f"{len(kept)} of {len(rounds)} rounds undisturbed (each of the three at >= {UNDISTURBED:.0%} of its median). "
        f"All rounds: firstline {spread([r.a_tps for r in rounds])}, llama-cpp-python "
        f"{spread([r.b_tps for r in rounds])}, native {spread([r.c_tps for r in rounds])} tok/s at 1-minute load "
        f"{spread([r.load for r in rounds])} on {os.cpu_count()} cores. llama.cpp's threads spin at a barrier "
        f"after every graph node; when another process takes a core, the other thread waits for it."
    )
    if per["c"] and eval_ms:
        bench.note(
            f"Per token: native `llama_decode` {fmt(per['c'], 3)} ms; llama-cpp-python's `eval()` alone "
            f"{fmt(eval_ms, 3)} ms (binding + bookkeeping {fmt(eval_ms - per['c'], 3)} ms); sampling "
            f"{fmt(sample_ms, 3)} ms (llama-bench never samples); llama-cpp-python's streaming chat "
            f"{fmt(per['b'], 3)} ms; firstline's full path {fmt(per['a'], 3)} ms, i.e. "
            f"{fmt((per['a'] or 0) - (per['b'] or 0), 3)} ms more than llama-cpp-python (detokenizing, "
            f"LangChain chunk, Delta, timing)."
        )
    if r_ac is not None and r_ac < 0.85 and per["c"] and per["a"]:
        bench.details["cause.decode_vs_native"] = (
            f"{fmt(per['a'] - per['c'], 2)} ms/token over native: sampling {fmt(sample_ms, 2)} ms, binding "
            f"{fmt((eval_ms or 0) - per['c'], 2)} ms; the rest is rounds disturbed by other processes "
            f"({len(kept)} of {len(rounds)} rounds usable)"
        )
    if r_ab is not None and r_ab < 0.95 and per["a"] and per["b"]:
        bench.details["cause.decode_vs_llama_cpp_python"] = (
            f"firstline spends {fmt(per['a'] - per['b'], 3)} ms/token more than llama-cpp-python"
        )


def plain_chat_runner(shared: Shared, model: Any, n_gen: int) -> Callable[[], tuple[float | None, float | None, int]]:
    """(b): one streaming chat completion on a second, identically loaded Llama -> (ttft_s, tok/s, tokens)."""
    from models import loader

    if shared.plain is None:
        shared.plain = loader.load_llama(model.path, **model.load_kwargs).llm
    plain = shared.plain
    s = model.settings
    messages = [{"role": m.role, "content": m.content} for m in shared.messages]

    def once() -> tuple[float | None, float | None, int]:
        plain.reset()  # uncached, like (a)
        t0 = time.perf_counter()
        times: list[float] = []
        text, finish = [], None
        for chunk in plain.create_chat_completion(
            messages=messages,
            max_tokens=n_gen,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            seed=s.seed,
            stream=True,
        ):
            choice = chunk["choices"][0]
            piece = choice.get("delta", {}).get("content")
            if piece:
                times.append(time.perf_counter())
                text.append(piece)
            finish = choice.get("finish_reason") or finish
        if finish == "length":
            tokens = n_gen
        else:
            tokens = len(plain.tokenize("".join(text).encode("utf-8"), add_bos=False, special=False))
        ttft = times[0] - t0 if times else None
        return ttft, decode_rate(times, tokens), tokens

    return once


def per_token_probe(shared: Shared, model: Any, n: int) -> tuple[float | None, float | None]:
    """ms per token of llama-cpp-python's eval() alone (after the prompt) and of the sampler chain alone."""
    plain = shared.plain
    if plain is None or not shared.messages:
        return None, None
    s = model.settings
    tokens = model.tokenize_prompt(shared.messages)
    plain.reset()
    plain.eval(tokens)
    probe, count = tokens[-1], max(8, n // 4)
    t0 = time.perf_counter()
    for _ in range(count):
        plain.eval([probe])
    eval_ms = (time.perf_counter() - t0) / count * 1000
    sampler = plain._init_sampler(
        top_k=s.top_k, top_p=s.top_p, min_p=s.min_p, temp=s.temperature, repeat_penalty=s.repeat_penalty
    )
    t0 = time.perf_counter()
    for _ in range(50):
        sampler.sample(plain._ctx, -1)
    sample_ms = (time.perf_counter() - t0) / 50 * 1000
    plain.reset()
    return eval_ms, sample_ms
