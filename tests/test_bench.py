"""The benchmark's plumbing: arithmetic, parsing, report writing and a smoke run of cheap sections.

No timing assertions: benchmarks print figures, tests only check that they are produced and written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ui.bench.core import Bench, BenchOptions, decode_rate, judge_targets, median, ratio, results_payload
from ui.bench.limits import bytes_per_token, gguf_tensor_bytes
from ui.bench.native import parse_llama_bench, pick, tokens_per_s
from usage.stats import percentile

ROOT = Path(__file__).resolve().parent.parent


def test_percentiles_ratios_and_decode_rate() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)
    assert percentile([], 50) is None
    assert ratio(3.0, 4.0) == 0.75
    assert ratio(1.0, 0.0) is None and ratio(None, 2.0) is None
    # 5 tokens arriving 0.1 s apart: 4 intervals in 0.4 s = 10 tok/s (the first token is prefill's)
    assert decode_rate([1.0, 1.1, 1.2, 1.3, 1.4]) == pytest.approx(10.0)
    # pieces can merge tokens: the token count comes from the ledger, the span from the pieces
    assert decode_rate([0.0, 1.0], tokens=11) == pytest.approx(10.0)
    assert decode_rate([1.0]) is None


LLAMA_BENCH_JSON = """llama-bench: benchmark 1/2: starting
[
  {"build_commit": "0c1e570", "n_prompt": 150, "n_gen": 0, "n_depth": 0, "n_threads": 2, "flash_attn": 0,
   "avg_ts": 900.0, "samples_ts": [880.0, 900.0, 950.0]},
  {"build_commit": "0c1e570", "n_prompt": 0, "n_gen": 64, "n_depth": 150, "n_threads": 2, "flash_attn": 0,
   "avg_ts": 100.0, "samples_ts": [90.0, 100.0, 120.0]},
  {"build_commit": "0c1e570", "n_prompt": 0, "n_gen": 64, "n_depth": 150, "n_threads": 2, "flash_attn": 1,
   "avg_ts": 110.0, "samples_ts": [110.0]}
]
"""


def test_llama_bench_output_is_parsed_and_picked() -> None:
    records = parse_llama_bench(LLAMA_BENCH_JSON)
    assert len(records) == 3
    pp = pick(records, n_prompt=150, n_gen=0, threads=2)
    tg = pick(records, n_prompt=0, n_gen=64, threads=2)
    tg_fa = pick(records, n_prompt=0, n_gen=64, threads=2, fa=True)
    assert tokens_per_s(pp) == 900.0  # median of the repetitions
    assert tokens_per_s(tg) == 100.0
    assert tokens_per_s(tg_fa) == 110.0
    assert pick(records, n_prompt=1, n_gen=0) is None and tokens_per_s(None) is None


def _bundled_model() -> Path:
    from models.loader import default_model_path

    try:
        path = default_model_path()
    except Exception:
        pytest.skip("the bundled model is not installed")
    if not path.exists():
        pytest.skip("the bundled model is not installed")
    return path


def test_gguf_tensor_sizes_add_up_to_the_file() -> None:
    path = _bundled_model()
    sizes = gguf_tensor_bytes(path)
    assert "token_embd.weight" in sizes and len(sizes) > 100
    total = sum(sizes.values())
    assert 0.9 * path.stat().st_size < total < path.stat().st_size


def test_bytes_per_token_counts_weights_and_kv_cache() -> None:
    path = _bundled_model()

    class FakeLlama:
        metadata = {
            "general.architecture": "llama",
            "llama.block_count": "30",
            "llama.embedding_length": "576",
            "llama.attention.head_count": "9",
            "llama.attention.head_count_kv": "3",
        }

        def n_vocab(self) -> int:
            return 49152

    class FakeModel:
        def __init__(self) -> None:
            self.path = path
            self.llama = FakeLlama()

    b = bytes_per_token(FakeModel(), depth=100)
    assert b["tied_embeddings"] == 1.0  # SmolLM2 has no separate output.weight
    assert b["kv_bytes_per_position"] == 2 * 30 * 3 * 64 * 2
    assert b["total"] == b["weights_read"] + 100 * b["kv_bytes_per_position"]


def _bench_with(figures: dict[str, float | None], tmp_path: Path) -> Bench:
    bench = Bench(BenchOptions(out_dir=tmp_path / "report"))
    bench.section = "decode"
    for name, value in figures.items():
        bench.add(name, value, "x")
    bench.section = "targets"
    judge_targets(bench)
    return bench


def test_targets_are_judged_from_the_figures(tmp_path: Path) -> None:
    bench = _bench_with(
        {
            "decode.ratio.firstline_vs_llama_cpp_python": 0.97,
            "decode.ratio.firstline_vs_native": 0.80,
            "cache.chat.speedup.same_conversation": 1.1,
            "cache.model.speedup.same_conversation": 5.0,
            "cache.model.speedup.state_cache": 4.0,
            "faq.latency.p50": None,
            "ledger.overhead.p95": 1.5,
            "server.sessions_1.total_tokens_per_s": 50.0,
            "server.sessions_4.total_tokens_per_s": 55.0,
            "server.sessions_16.total_tokens_per_s": 49.0,
            "guard.first_text.ratio": 1.2,
            "engines.inprocess.sessions_1.total_tokens_per_s": 50.0,
            "engines.llama-server_8.sessions_16.total_tokens_per_s": 120.0,
            "engines.inprocess.sessions_16.ttft.p95": 30_000.0,
            "engines.llama-server_8.sessions_16.ttft.p95": 12_000.0,
            "engines.inprocess.sessions_16.billed_vs_busy": 0.998,
            "engines.llama-server_8.sessions_16.billed_vs_busy": 1.013,
        },
        tmp_path,
    )
    status = {t.name: t.met for t in bench.targets}
    assert status == {
        "decode_vs_llama_cpp_python": True,
        "decode_vs_native": False,
        "cached_follow_up": False,  # the chat path's prompt prefix changes every turn
        "cached_follow_up_new_topic": None,
        "cached_follow_up_stable_prefix": True,
        "interleaved_follow_up": True,
        "faq_fast_path": None,  # not yet available: neither met nor missed
        "ledger_overhead": True,
        "concurrency_throughput": False,  # 16 sessions fell below one session's throughput
        "guard_first_text": True,  # the guarded first text within 1.5x of the unguarded
        "engines_throughput": True,  # 120 tok/s with 8 slots at 16 sessions >= 2x one in-process session's 50
        "engines_ttft": False,  # 2.5x better, not 3x
        "billing_conservation": False,  # the worst run billed 1.3 % more than the replica was busy
    }


def test_report_files_are_written(tmp_path: Path) -> None:
    from ui.bench import report as bench_report

    bench = _bench_with({"decode.firstline.tokens_per_s": 60.0, "ledger.overhead.p95": 3.0}, tmp_path)
    bench.note("a note with **markdown**", "decode")
    files = bench_report.write(bench)
    md = Path(files["markdown"]).read_text()
    assert "# firstline performance report" in md and "a note with **markdown**" in md
    assert "| ledger_overhead |" in md and "**missed**" in md
    doc = json.loads(Path(files["json"]).read_text())
    assert {"name": "ledger.overhead.p95", "value": 3.0, "unit": "x"}.items() <= doc["results"][1].items()
    if "plot" in files:
        assert Path(files["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert results_payload(bench)["results"][0]["name"] == "decode.firstline.tokens_per_s"


def test_cli_smoke_run_of_cheap_sections(tmp_path: Path) -> None:
    from ui.cli.main import main

    out = tmp_path / "bench-out"
    result = CliRunner().invoke(
        main,
        ["bench", "--json", "--quick", "--only", "machine", "--only", "ledger", "--ledger-rows", "500",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    names = {r["name"]: r for r in doc["results"]}
    assert names["ledger.overhead.p95"]["unit"] == "ms" and names["ledger.overhead.p95"]["value"] > 0
    assert names["report.rows"]["value"] == 500
    assert [t["name"] for t in doc["targets"]] == ["ledger_overhead"]
    assert (out / "report.md").exists() and (out / "report.json").exists()


def test_bench_command_loads_under_python_dash_m() -> None:
    # ui.cli registers `bench` at its end; `python -m ui.cli` (how the server is started) must not hit a
    # circular import of ui.cli from ui.cli.benchmark.
    proc = subprocess.run(
        [sys.executable, "-m", "ui.cli", "bench", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout


def test_disturbed_rounds_are_left_out_of_the_medians() -> None:
    from ui.bench.decode import Round, undisturbed

    def rnd(a: float, b: float, c: float) -> Round:
        return Round(a, 1.0, b, 1.0, c, 1.0, 500.0, 10.0, 0.2, 0.5)

    rounds = [rnd(90, 95, 100), rnd(10, 90, 100), rnd(88, 93, 30), rnd(85, 91, 98), rnd(87, 90, 120)]
    kept = undisturbed(rounds)
    # (a) at 11% and (c) at 30% of their median round: another process ran; a fast round rejects nothing
    assert kept == [rounds[0], rounds[3], rounds[4]]
    assert undisturbed([rnd(10, 10, 10)]) == [rnd(10, 10, 10)]


def test_the_report_quotes_the_last_gpu_run_as_such(tmp_path: Path) -> None:
    from ui.bench.core import BenchOptions
    from ui.bench.report import gpu_section

    committed = BenchOptions().gpu_results
    assert committed is not None and committed.is_file()
    text = "\n".join(gpu_section(committed))
    assert "not measured by this run" in text and "NVIDIA H200" in text
    assert "compute s per request" in text and "0.368" in text  # the H200 figure, next to the 3 s assumption
    assert "cloud-gpu-per-second" in text
    broken = tmp_path / "gpu-bench.json"
    broken.write_text("{not json", encoding="utf-8")
    assert "could not be read" in "\n".join(gpu_section(broken))
    assert gpu_section(tmp_path / "missing.json") == []


@pytest.mark.real_model
def test_the_engines_section_runs_and_its_report_is_written(tmp_path: Path) -> None:
    """Bug: the engines section left its composed services in the figures, so writing report.json failed
    ("Object of type Services is not JSON serializable") after a full 14-minute run."""
    from ui.cli.main import main

    out = tmp_path / "bench-out"
    result = CliRunner().invoke(
        main, ["bench", "--json", "--quick", "--only", "engines", "--sessions", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    names = {r["name"]: r for r in doc["results"]}
    for config in ("inprocess", "llama-server_4", "llama-server_8"):
        assert names[f"engines.{config}.sessions_1.total_tokens_per_s"]["value"] > 0
        assert names[f"engines.{config}.sessions_1.billed_vs_busy"]["value"] is not None
    assert json.loads((out / "report.json").read_text())["results"]


def test_every_section_has_a_title_so_its_figures_reach_report_md(tmp_path: Path) -> None:
    """Bug: the engines section had no title, so report.md left all its figures out (only report.json had
    them)."""
    from ui.bench import report as bench_report
    from ui.bench.core import SECTIONS

    assert set(SECTIONS) <= set(bench_report.TITLES)
    bench = Bench(BenchOptions(out_dir=tmp_path / "report"))
    bench.section = "engines"
    bench.add("engines.inprocess.sessions_1.total_tokens_per_s", 61.5, "tok/s")
    bench.section = "targets"
    judge_targets(bench)
    md = Path(bench_report.write(bench)["markdown"]).read_text()
    assert "`engines.inprocess.sessions_1.total_tokens_per_s`" in md
