"""`firstline bench`: the benchmark suite (ui/bench/; the runner composes the sections)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ui.bench.core import SECTIONS, BenchOptions, fmt, results_payload
from ui.cli.common import friendly_errors


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-report"),
    show_default=True,
    help="Directory for report.md, report.json and bench.png.",
)
@click.option("--quick", is_flag=True, help="Smaller runs of every section (about two minutes).")
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(SECTIONS),
    help="Run only these sections (repeatable). Default: all.",
)
@click.option("--reps", type=click.IntRange(1, 50), default=None, help="Repetitions per timing (median).")
@click.option("--tokens", "gen_tokens", type=click.IntRange(2, 2048), default=None, help="Tokens per decode run.")
@click.option(
    "--threads",
    type=click.IntRange(1, 512),
    default=None,
    help="llama.cpp threads for every section (default: FIRSTLINE_N_THREADS, else all cores).",
)
@click.option("--ledger-rows", type=click.IntRange(1), default=None, help="Ledger rows for the report timing.")
@click.option(
    "--database-url",
    default=None,
    envvar="FIRSTLINE_BENCH_DATABASE_URL",
    help="PostgreSQL for the postgres section (a scratch schema, dropped afterwards); make bench starts one.",
)
@click.option("--pg-rows", type=click.IntRange(1), default=None, help="Ledger rows for the PostgreSQL report (10M).")
@click.option(
    "--sessions",
    default=None,
    help="Comma-separated concurrency levels for the server and engines sections (default 1,4,16 and "
    "1,4,16,64; quick 1,4).",
)
@click.option(
    "--llama-bench",
    "llama_bench",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="FIRSTLINE_LLAMA_BENCH",
    help="Native llama-bench binary. Default: the one scripts/build-llama-bench.sh built, else PATH.",
)
@click.option(
    "--gpu-results",
    "gpu_results",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="gpu-bench.json of a GPU run (scripts/gpu_bench.py) to quote in the report. "
    "Default: docs/bench/gpu/gpu-bench.json of this checkout.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Accepted for symmetry; the benchmark always works in fresh temporary databases.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@friendly_errors
def bench(
    out_dir: Path,
    quick: bool,
    only: tuple[str, ...],
    reps: int | None,
    gen_tokens: int | None,
    threads: int | None,
    ledger_rows: int | None,
    database_url: str | None,
    pg_rows: int | None,
    sessions: str | None,
    llama_bench: Path | None,
    gpu_results: Path | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """The benchmark suite: speed against native llama.cpp and the hardware's limits; writes a report."""
    from ui.bench.runner import run_bench

    levels = None
    if sessions:
        try:
            levels = tuple(int(x) for x in sessions.split(",") if x.strip())
        except ValueError as exc:
            raise click.BadParameter("use comma-separated integers, e.g. 1,4,16", param_hint="--sessions") from exc
    options = BenchOptions.for_mode(
        quick,
        out_dir=out_dir,
        sections=tuple(s for s in SECTIONS if not only or s in only),
        reps=reps,
        gen_tokens=gen_tokens,
        ledger_rows=ledger_rows,
        database_url=database_url,
        pg_rows=pg_rows,
        sessions=levels,
        engine_sessions=levels,
        llama_bench=llama_bench,
        gpu_results=gpu_results,
        threads=threads,
    )

    def progress(message: str) -> None:
        click.echo(f"bench: {message}", err=True)

    result = run_bench(options, progress)
    files = result.details.get("files", {})
    if as_json:
        click.echo(json.dumps(results_payload(result, files), ensure_ascii=False, indent=2, default=str))
        return
    for fig in result.figures:
        value = "n/a" if fig.value is None else fmt(fig.value, 3)
        click.echo(f"{fig.name:55s} {value:>12s} {fig.unit}")
    click.echo("")
    for t in result.targets:
        status = {True: "met", False: "MISSED", None: "not measured"}[t.met]
        click.echo(f"target {t.name}: {status} ({t.measured}){' - ' + t.cause if t.cause else ''}")
    click.echo(f"\nreport: {files.get('markdown')}  json: {files.get('json')}  plot: {files.get('plot', 'none')}")
