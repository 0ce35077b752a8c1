"""Write a benchmark run as Markdown (report.md), JSON (report.json) and a plot (bench.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ui.bench.core import Bench, Figure, fmt, results_payload

TITLES = {
    "machine": "Machine",
    "decode": "Decode speed and time to first token: firstline vs llama-cpp-python vs native llama.cpp",
    "limits": "Hardware limits: memory bandwidth and compute",
    "cache": "Follow-up turns: prompt caching",
    "faq": "FAQ fast path",
    "ledger": "Ledger overhead and report time",
    "postgres": "PostgreSQL: ledger overhead, write patterns and reports at scale",
    "server": "Concurrent chat sessions through the server",
    "accounting": "Accuracy of the compute-seconds accounting",
    "worker": "The model worker process: cost of the hop per token and per request",
    "buffers": "llama.cpp's extra CPU buffer types (what the AMX guard turns off): speed on and off",
    "threads": "Decode idle and beside a busy core: thread counts and OpenMP wait policies",
    "guard": "Grounding guard: time to the first visible text",
    "engines": "Many sessions at once: in-process vs llama-server with 4 and 8 slots, and billing under batching",
    "targets": "Targets",
}
STATUS = {True: "met", False: "**missed**", None: "not measured"}


def write(bench: Bench) -> dict[str, str]:
    """Write the three files into the run's out_dir; returns their paths."""
    out = bench.options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": str(out / "report.md"), "json": str(out / "report.json")}
    plot = out / "bench.png"
    if write_plot(bench, plot):
        files["plot"] = str(plot)
    Path(files["markdown"]).write_text(markdown(bench, plot.name if "plot" in files else None), encoding="utf-8")
    payload = results_payload(bench, files)
    Path(files["json"]).write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    bench.details["files"] = files
    return files


def _value(fig: Figure) -> str:
    if fig.value is None:
        return "n/a"
    if fig.unit == "ratio":
        return f"{fig.value:.3f}"
    return fmt(fig.value, 3 if abs(fig.value) < 10 else 1)


def markdown(bench: Bench, plot_name: str | None) -> str:
    """The human-readable report."""
    d = bench.details
    m = d.get("machine") or {}
    model = d.get("model") or {}
    lines = ["# firstline performance report", ""]
    mode = "firstline bench --quick" if bench.options.quick else "firstline bench"
    lines.append(f"Generated {m.get('date', '')} by `{mode}` in {d.get('runtime_s', '?')} s.")
    lines.append("")
    if m:
        gpu = m.get("gpu") or "no GPU"
        lines.append(
            f"- **Machine**: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB RAM, {gpu}; "
            f"{m.get('os')}"
        )
    before, after = d.get("load_before"), d.get("load_after")
    if before:
        lines.append(
            f"- **Load average** (1/5/15 min) at start {_load(before)}, at end {_load(after)} "
            f"(other processes on the machine slow every figure)"
        )
    if model:
        sampling = ", ".join(f"{k}={v}" for k, v in model.get("sampling", {}).items())
        lines.append(
            f"- **Model**: {model.get('model_id')} ({model.get('file_bytes', 0) / 1e6:.1f} MB, "
            f"{model.get('n_params', 0) / 1e6:.0f}M parameters) on {model.get('device')}; "
            f"n_ctx={model.get('n_ctx')}, "
            f"n_threads={model.get('n_threads')}, n_batch={model.get('n_batch')}, "
            f"n_gpu_layers={model.get('n_gpu_layers')}; sampling {sampling}"
        )
    if m:
        lines.append(
            f"- **Versions**: firstline {m.get('firstline')} (commit {m.get('git_commit')}), "
            f"llama-cpp-python "
            f"{m.get('llama_cpp_python')}, gradio {m.get('gradio')}, Python {m.get('python')}"
        )
    lb = d.get("llama_bench")
    if lb:
        lines.append(f"- **llama-bench**: {lb.get('binary')} (llama.cpp commit {lb.get('build_commit')})")
    lines += [
        "",
        "## Targets",
        "",
        "| target | goal | measured | status | cause / note |",
        "|---|---|---|---|---|",
    ]
    for t in bench.targets:
        lines.append(f"| {t.name} | {t.goal} | {t.measured} | {STATUS[t.met]} | {t.cause} |")
    if plot_name:
        lines += ["", f"![benchmark figures]({plot_name})"]
    sections = [
        s for s in TITLES if s != "targets" and (any(f.section == s for f in bench.figures) or s in bench.notes)
    ]
    for section in sections:
        lines += ["", f"## {TITLES[section]}", ""]
        figs = [f for f in bench.figures if f.section == section]
        if figs:
            lines += ["| figure | value | unit | name |", "|---|---:|---|---|"]
            lines += [f"| {f.label} | {_value(f)} | {f.unit} | `{f.name}` |" for f in figs]
        for note in bench.notes.get(section, []):
            lines += ["", f"- {note}"]
    lines += gpu_section(bench.options.gpu_results)
    lines += ["", "## Reproduce", ""]
    lines += [
        "```",
        "make bench                                   # install, build llama-bench if missing, full run",
        "firstline bench --quick --out bench-report   # ~2 minutes",
        "firstline bench --only decode --only limits  # some sections",
        "scripts/gpu-bench.sh                         # on a CUDA machine",
        "```",
        "",
        f"Section run times (s): {d.get('section_seconds', {})}.",
    ]
    return "\n".join(lines) + "\n"


def gpu_section(path: Path | None) -> list[str]:
    """The figures of the last GPU run (scripts/gpu_bench.py), quoted as such: this run did not measure them."""
    if path is None or not path.is_file():
        return []
    try:
        g = json.loads(path.read_text(encoding="utf-8"))
        d, n, r, fu = g["decode"], g.get("native", {}), g["replay"], g["follow_up"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["", "## GPU (last GPU run)", "", f"- {path} could not be read."]
    gpu = g.get("machine", {}).get("gpu") or g.get("model", {}).get("device", "?")
    when = g.get("measured_at", "date not recorded")
    rows = [
        ("decode: firstline model path / plain llama-cpp-python / native llama-bench",
         f"{fmt(d.get('firstline_tps'), 1)} / {fmt(d.get('plain_tps'), 1)} / {fmt(n.get('tg_tps'), 1)} tok/s"),
        (f"time to first token, {d.get('prompt_tokens')}-token prompt: firstline / plain / native",
         f"{fmt((d.get('firstline_ttft_s') or 0) * 1000, 1)} / {fmt((d.get('plain_ttft_s') or 0) * 1000, 1)} / "
         f"{fmt((n.get('ttft_s') or 0) * 1000, 1)} ms"),
        ("follow-up, stable prefix cached / uncached",
         f"{fmt((fu.get('ttft_cached_s') or 0) * 1000, 1)} / {fmt((fu.get('ttft_uncached_s') or 0) * 1000, 1)} ms"),
        (f"compute s per request (mean / p95 over {r.get('requests')} replayed dev-set requests)",
         f"{fmt(r.get('compute_s_mean'), 3)} / {fmt(r.get('compute_s_p95'), 3)} s "
         f"(pricing example: {fmt(g.get('assumed_compute_s_per_request'), 0)} s)"),
    ]  # fmt: skip
    rows += [
        (f"cost per request, profile {c['profile']} (at the assumed 3 s)",
         f"{c['per_request']:.6f} {c['currency']} ({c['per_request_at_3s']:.6f})")
        for c in g.get("costs", [])
    ]  # fmt: skip
    lines = ["", "## GPU (last GPU run, not measured by this run)", "",
             f"{gpu}, {when}, llama-cpp-python {g.get('llama_cpp_python')}, n_gpu_layers "
             f"{g.get('model', {}).get('n_gpu_layers')}; from `{path.name}` (scripts/gpu_bench.py, "
             "see docs/performance.md).", "", "| figure | value |", "|---|---|"]  # fmt: skip
    return lines + [f"| {label} | {value} |" for label, value in rows]


def _load(values: Any) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "?"


def write_plot(bench: Bench, path: Path) -> bool:
    """A 2x2 figure: decode, time to first token, concurrency, small latencies (False: no matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        bench.note("no plot: matplotlib is not installed (pip install matplotlib)", "targets")
        return False
    v = bench.value
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _bars(
        axes[0][0],
        "Decode (tokens/s, higher is better)",
        [
            ("firstline", v("decode.firstline.tokens_per_s")),
            ("llama-cpp-python", v("decode.llama_cpp_python.tokens_per_s")),
            ("native", v("decode.native.tokens_per_s")),
            ("native\nFA off", v("native.tg.flash_attn_off.tokens_per_s")),
            ("native 1 thr", v("native.tg.one_thread.tokens_per_s")),
            ("bandwidth\nceiling", v("limit.bandwidth.tokens_per_s")),
        ],
    )
    _bars(
        axes[0][1],
        "Time to first token (ms, lower is better)",
        [
            ("firstline", v("ttft.firstline")),
            ("llama-cpp-\npython", v("ttft.llama_cpp_python")),
            ("native\nprompt", v("ttft.native")),
            ("chat\nfollow-up\ncold", v("cache.chat.ttft.cold")),
            ("chat\nfollow-up\ncached", v("cache.chat.ttft.same_conversation")),
            ("stable\nprefix\ncold", v("cache.model.ttft.cold")),
            ("stable\nprefix\ncached", v("cache.model.ttft.same_conversation")),
            ("stable\nprefix\ninterleaved", v("cache.model.ttft.interleaved_no_state_cache")),
            ("stable\nprefix\nstate cache", v("cache.model.ttft.interleaved_state_cache")),
        ],
    )
    ax = axes[1][0]
    levels = [n for n in bench.options.sessions if v(f"server.sessions_{n}.total_tokens_per_s") is not None]
    if levels:
        xs = [str(n) for n in levels]
        ax.bar(xs, [v(f"server.sessions_{n}.total_tokens_per_s") or 0 for n in levels], color="#4c72b0")
        ax.set_ylabel("total tokens/s")
        ax.set_xlabel("concurrent sessions")
        twin = ax.twinx()
        for q, style in ((50, "o-"), (95, "s--")):
            twin.plot(xs, [(v(f"server.sessions_{n}.latency.p{q}") or 0) / 1000 for n in levels], style,
                      color="#dd8452", label=f"latency p{q}")  # fmt: skip
        twin.set_ylabel("request latency (s)")
        twin.legend(loc="upper left")
        ax.set_title("Concurrent sessions through the server")
    else:
        ax.set_axis_off()
    _bars(
        axes[1][1],
        "Small latencies (ms, log scale)",
        [
            ("ledger p50", v("ledger.overhead.p50")),
            ("ledger p95", v("ledger.overhead.p95")),
            ("fsync p95", v("disk.fsync.p95")),
            ("FAQ p50", v("faq.latency.p50")),
            ("FAQ p95", v("faq.latency.p95")),
            ("state\nrestore", v("cache.state.restore_ms")),
        ],
        log=True,
    )
    m = bench.details.get("machine") or {}
    fig.suptitle(f"firstline bench: {m.get('cpu', '')}, {m.get('cores', '?')} cores, {m.get('date', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _bars(ax: Any, title: str, items: list[tuple[str, float | None]], log: bool = False) -> None:
    items = [(k, val) for k, val in items if val is not None]
    if not items:
        ax.set_axis_off()
        return
    bars = ax.bar([k for k, _ in items], [val for _, val in items], color="#4c72b0")
    for bar, (_, val) in zip(bars, items, strict=True):
        ax.annotate(fmt(val, 1), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=8)
