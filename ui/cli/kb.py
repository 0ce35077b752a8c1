"""`firstline kb ingest|search` and `firstline eval`: the knowledge base and the evaluation harness."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ui.cli.common import HelpGroup, data_dir_option, emit, fail, friendly_errors, json_option
from usage.rendering import cell


@contextmanager
def open_kb(data_dir: Path | None) -> Iterator[Any]:
    """The knowledge base in the data directory, with the embedder the settings ask for."""
    from bot.embeddings import load_embedder
    from bot.kb.search import KnowledgeBase, KnowledgeSettings
    from bot.settings import BotSettings

    bot_settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    kb = KnowledgeBase(bot_settings.database_path, embedder=load_embedder(KnowledgeSettings().embeddings))
    try:
        yield kb
    finally:
        kb.close()


@click.group(cls=HelpGroup)
def kb() -> None:
    """Knowledge base: ingest documents, try searches."""


@kb.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--exclude", multiple=True, help="Glob of paths (relative to a folder) to leave out; repeatable.")
@data_dir_option
@json_option
@friendly_errors
def ingest(paths: tuple[Path, ...], exclude: tuple[str, ...], data_dir: Path | None, as_json: bool) -> None:
    """Add or update documents from files and folders (Markdown, HTML, text, PDF, FAQ JSON/JSONL/CSV).

    Unchanged files are skipped, changed ones replaced, and files gone from a given folder removed.
    """
    with open_kb(data_dir) as base:
        report = base.ingest(list(paths), progress=True, exclude=exclude)
    payload = report.as_dict()
    if as_json:
        emit(payload)
    else:
        click.echo(
            "{documents} documents, {chunks} chunks: {added} added, {updated} updated, {unchanged} unchanged, "
            "{skipped} skipped, {removed} removed".format(**payload)
        )
    for path, reason in report.errors:
        if not as_json:
            click.echo(f"firstline: {path}: {reason}", err=True)
    if report.errors and not (report.added or report.updated or report.unchanged):
        raise SystemExit(1)  # nothing usable was given


@kb.command()
@click.argument("query")
@click.option("--top", type=click.IntRange(1, 50), default=5, show_default=True, help="Results to show.")
@click.option("--lang", type=click.Choice(["de", "en"]), default=None, help="Search only this language.")
@data_dir_option
@json_option
@friendly_errors
def search(query: str, top: int, lang: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Show what retrieval finds for a question (score: 0..1 relevance, best first)."""
    with open_kb(data_dir) as base:
        results = base.search(query, lang, top=top)  # type: ignore[arg-type]
    if as_json:
        emit({"results": [s.as_dict() for s in results]})
        return
    if not results:
        click.echo("no results", err=True)
    for n, s in enumerate(results, 1):
        where = f"{s.path} ({s.section})" if s.section else s.path
        click.echo(f"{n}. [{s.score:.3f}] {s.title} - {where}")
        snippet = " ".join(s.snippet.split())
        click.echo(f"   {snippet[:200]}{'…' if len(snippet) > 200 else ''}")


@click.command("eval")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N questions.")
@click.option("--faq-threshold", type=click.FloatRange(0, 1), default=None, help="FAQ fast-path threshold.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Per-question CSV.")
@click.option(
    "--answer-mode",
    type=click.Choice(["generate", "extractive", "auto"]),
    default=None,
    help="Answer mode to evaluate (default: FIRSTLINE_ANSWER_MODE, else auto).",
)
@click.option(
    "--judge",
    "judge_url",
    default=None,
    metavar="URL",
    help="OpenAI-compatible endpoint (e.g. http://host:8000/v1) whose model also scores faithfulness and relevance.",
)
@click.option("--judge-model", default=None, help="Model name for --judge (default: the endpoint's first model).")
@click.option(
    "--judge-api-key", envvar="FIRSTLINE_JUDGE_API_KEY", default=None, help="Bearer token for --judge, if it needs one."
)
@click.option(
    "--model",
    "model_versions",
    multiple=True,
    metavar="VERSION",
    help="Score this model version (`firstline models list`; 'base' = untuned) instead of the active one; "
    "repeat it to compare versions side by side.",
)
@data_dir_option
@json_option
@friendly_errors
def eval_command(
    questions: Path,
    limit: int | None,
    faq_threshold: float | None,
    out: Path | None,
    answer_mode: str | None,
    judge_url: str | None,
    judge_model: str | None,
    judge_api_key: str | None,
    model_versions: tuple[str, ...],
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Run a question set (JSON Lines) through the chat path and score it.

    Retrieval hit@k uses the knowledge base's search directly (independent of routing); answers are
    scored for groundedness, reference agreement, language, well-formedness and abstention. See
    bot/evaluation.py, bot/answer_eval.py and docs/quality.md for every definition.
    """
    from bot import evaluation

    try:
        items = evaluation.load_questions(questions, limit)
    except (ValueError, UnicodeDecodeError) as exc:
        fail(str(exc), 2)
    if faq_threshold is not None:  # the entry point composes settings; the bot reads them from here
        os.environ["FIRSTLINE_FAQ_THRESHOLD"] = str(faq_threshold)
    if answer_mode is not None:
        os.environ["FIRSTLINE_ANSWER_MODE"] = answer_mode
    judge = None
    if judge_url is not None:
        from bot.judge import Judge, JudgeError

        try:
            judge = Judge(judge_url, model=judge_model, api_key=judge_api_key)
        except JudgeError as exc:
            fail(str(exc), 2)
    try:
        if len(model_versions) > 1:  # side by side
            reports = [run_eval(items, data_dir, version, judge) for version in model_versions]
            if as_json:
                emit({"models": reports})
            for payload in [] if as_json else reports:
                click.echo(f"== model version {payload['model']} ({payload['model_id']})")
                print_report(payload)
            return
        payload = run_eval(items, data_dir, model_versions[0] if model_versions else None, judge)
    finally:
        if judge is not None:
            judge.close()
    if out is not None:
        write_rows(out, payload["rows"])
    if as_json:
        emit(payload)
        return
    print_report(payload)


def run_eval(items: list[Any], data_dir: Path | None, model_version: str | None, judge: Any) -> dict[str, Any]:
    """The eval report of one model version (None: the active one) on the questions."""
    from bot import evaluation
    from bot.kb.demo import ensure_demo_kb
    from bot.kb.search import KnowledgeBase
    from ui.app import build_services
    from usage.feedback import feedback

    services = build_services(data_dir, model_version=model_version)
    base = getattr(services, "knowledge", None)  # the chat's own knowledge base: metrics match the product
    own_kb = base is None
    if base is None:
        from bot.embeddings import load_embedder
        from bot.kb.search import KnowledgeSettings

        base = KnowledgeBase(
            services.bot_settings.database_path, embedder=load_embedder(KnowledgeSettings().embeddings)
        )
    try:
        ensure_demo_kb(base)
        model_id = services.model.model_id
        results = evaluation.run(services, base, items, judge=judge)
    finally:
        if own_kb:
            base.close()
        services.close()
    payload = {**evaluation.report(results), "model": model_version or "active", "model_id": model_id}
    # what customers said about the live bot's answers (chat thumbs, ratings after a ticket), beside the scores
    rated = feedback(services.bot_settings.database)
    payload["feedback"] = rated.as_dict() if rated is not None else None
    return payload


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The per-question rows as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        fields = list(rows[0]) if rows else ["question"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ";".join(v) if isinstance(v, tuple | list) else v for k, v in row.items()})


def print_report(payload: dict[str, Any]) -> None:
    """Human-readable tables: headline figures, per language, FAQ thresholds, questions."""
    keys = [k for k, v in payload.items() if not isinstance(v, dict | list)]
    width = max(len(k) for k in keys)
    for k in keys:
        click.echo(f"{k:<{width}}  {cell(payload[k])}")
    click.echo("\nper language       questions  hit@1  hit@3")
    for lang, row in payload["by_language"].items():
        click.echo(
            f"  {lang:<16} {row['questions']:>9}  {cell(row['retrieval_hit_at_1']):>5}  "
            f"{cell(row['retrieval_hit_at_3']):>5}"
        )
    click.echo("\nanswers by      questions  shown  grounded  garbled  lang ok  ref F1  abstain recall")
    groups = [("language", payload["by_language"]), ("route", payload.get("by_route", {})),
              ("model", payload.get("by_model", {}))]  # fmt: skip
    for label, rows in groups:
        for name, row in rows.items():
            click.echo(
                f"  {label + ' ' + name:<14} {row['questions']:>9}  {row.get('answers_shown', 0):>5}  "
                f"{cell(row.get('grounded_mean')):>8}  {cell(row.get('garbled_rate')):>7}  "
                f"{cell(row.get('language_match_rate')):>7}  {cell(row.get('reference_f1')):>6}  "
                f"{cell(row.get('abstention_recall')):>6}"
            )
    click.echo("\nfaq threshold  answers  share  precision")
    for row in payload["faq_threshold_tradeoff"]:
        click.echo(
            f"  {row['threshold']:<12.2f} {row['faq_answers']:>7}  {row['faq_share']:.3f}  {row['faq_precision']:.3f}"
        )
    rated = payload.get("feedback")
    if rated:
        helpful, mean = cell(rated["answer_helpful_rate"]), cell(rated["resolution_rating_mean"])
        click.echo(
            f"\ncustomer feedback: {rated['answers_rated']} answers rated, helpful {helpful}; "
            f"{rated['resolutions_rated']} resolutions rated, mean {mean} of 5"
        )
    click.echo("\nroute  hit@1 hit@3 esc/should  latency  question")
    for r in payload["rows"]:
        esc = f"{cell(r['escalated'])[0]}/{cell(r['should_escalate'])[0]}"
        flags = f"{cell(r['hit_at_1']):>5} {cell(r['hit_at_3']):>5} {esc}"
        click.echo(f"{r['route']:<6} {flags:<22} {r['latency_s']:>7.2f}s  {r['question'][:70]}")
