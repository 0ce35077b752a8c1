"""`firstline tune` end to end: data -> LoRA training -> GGUF adapter -> held-out answers -> a model version.

1. Build the examples from the knowledge base (and resolved tickets) in the serving format and split
   them by fact group (bot/tuning/dataset.py); write them to `models/<version>/` (training data,
   held-out questions as a `firstline eval` question file).
2. Tokenize them with llama.cpp's tokenizer and train a LoRA adapter from the GGUF base
   (models/tuning.py); held-out loss picks the epoch. A run interrupted midway resumes at its last
   checkpoint when the same data and settings come again.
3. Export the chosen adapter to GGUF (models/gguf_export.py) and record its SHA-256.
4. Answer the held-out questions with the base and with base + adapter through llama.cpp, as the
   serving path would, and score both (bot/tuning/gate.py).
5. Record the version (base model and its SHA-256, data snapshot hash, settings, metrics) and one ledger
   row with route `training` holding the compute of steps 1-4, priced like any other request.
The new version does not serve until `firstline models activate` lets it through the held-out gate.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.kb.search import KnowledgeBase
from bot.tuning import gate
from bot.tuning.dataset import DataSet, TuneExample, build_dataset
from bot.tuning.registry import ModelRegistry, ModelVersion
from bot.types import Lang, Source
from models.loader import sha256_of
from models.types import ChatModel
from usage.ledger import Ledger, Measurement

log = logging.getLogger(__name__)

ModelFactory = Callable[[Path | None, str], ChatModel]  # (adapter file or None, model id) -> a loaded model


@dataclass(frozen=True)
class TuneRequest:
    """What `firstline tune` was asked for (recorded with the version)."""

    epochs: int = 2
    max_steps: int | None = None
    learning_rate: float = 3e-4
    rank: int = 16
    layer_share: float = 0.5
    batch_size: int = 4
    heldout_share: float = 0.2
    abstain_share: float = 0.1
    max_examples: int | None = None
    max_heldout: int | None = 24  # held-out examples whose loss and answers the gate measures
    answer_tokens: int = 160
    seed: int = 13
    device: str = "auto"
    threads: int | None = None


@dataclass(frozen=True)
class BaseModel:
    """The GGUF file that serves and that the adapter is trained on."""

    path: Path
    sha256: str
    model_id: str


@dataclass
class TuneOutcome:
    version: ModelVersion
    dataset: DataSet
    train: Any  # models.tuning.TrainResult
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def model_id_for(base: BaseModel, version: str) -> str:
    """What the ledger and reports call a tuned version: the base model plus the adapter's version."""
    return f"{base.model_id}+lora-{version}"


def retriever(kb: KnowledgeBase, top_k: int, min_relevance: float) -> Callable[[str, Lang], list[Source]]:
    """The passages the router hands the model for a question (same search, same relevance cut)."""

    def retrieve(question: str, lang: Lang) -> list[Source]:
        return [s for s in kb.search(question, lang, top=top_k) if s.score >= min_relevance]

    return retrieve


def run_tune(
    *,
    request: TuneRequest,
    base: BaseModel,
    knowledge: KnowledgeBase,
    retrieve: Callable[[str, Lang], list[Source]],
    build_prompt: gate.PromptBuilder,
    load_model: ModelFactory,
    registry: ModelRegistry,
    ledger: Ledger,
    tickets: Any = None,
    grounding: Any = None,
    scorer: gate.Scorer,
    progress: bool = True,
) -> TuneOutcome:
    """Build data, train, export, evaluate and record one model version (see the module docstring)."""
    from models.gguf_export import export_adapter
    from models.tuning import ExampleEncoder, LoraTrainer, TrainConfig, require_training_libraries, run_key

    require_training_libraries()
    began = time.perf_counter()
    version = registry.next_version()
    model_id = model_id_for(base, version)
    rid = ledger.start(conversation_id=f"training:{version}", route="training", model_id=model_id)
    try:
        _say(f"building training data from the knowledge base ({version})", progress)
        data = build_dataset(knowledge, retrieve, tickets=tickets, grounding=grounding,
                             abstain_share=request.abstain_share, heldout_share=request.heldout_share,
                             seed=request.seed, max_examples=request.max_examples)  # fmt: skip
        if not data.train or not data.heldout:
            raise TuneDataError(
                f"too little material to tune on: {len(data.train)} training and {len(data.heldout)} held-out "
                "examples (ingest the help centre and FAQ first: `firstline kb ingest`)"
            )
        folder = registry.data_dir / "models" / version
        folder.mkdir(parents=True, exist_ok=True)
        _write_jsonl(folder / "data.jsonl", [e.as_dict() for e in data.examples])
        _write_jsonl(folder / "heldout.jsonl", [e.question_row() for e in data.heldout])
        # the gate's held-out examples (a seeded subset on a slow machine): their loss and their answers
        gated = gate_examples(data.heldout, request.max_heldout, request.seed)
        encoder = ExampleEncoder(base.path)
        try:
            train = [encoder.encode(build_prompt(e.question, e.lang, e.sources), e.answer) for e in data.train]
            held = [encoder.encode(build_prompt(e.question, e.lang, e.sources), e.answer) for e in gated]
        finally:
            encoder.close()
        config = TrainConfig(epochs=request.epochs, max_steps=request.max_steps, learning_rate=request.learning_rate,
                             rank=request.rank, alpha=2 * request.rank, layer_share=request.layer_share,
                             batch_size=request.batch_size,
                             seed=request.seed, device=request.device, threads=request.threads)  # fmt: skip
        work = registry.data_dir / "models" / "runs" / run_key(data.snapshot_hash(), config, base.sha256)
        result = LoraTrainer(base.path, work, config, progress=progress).run(train, held)
        adapter = export_adapter(result.adapter_dir, result.base_config_dir, folder / "adapter.gguf")
        # the chosen epoch's adapter in peft format too: to merge it into the base later, or to train on
        shutil.copytree(result.adapter_dir, folder / "peft", dirs_exist_ok=True)
        _say(f"adapter written: {adapter} (epoch {result.best_epoch} of {len(result.epochs)})", progress)
        metrics = {
            "base": _answer_metrics(load_model(None, base.model_id), gated, build_prompt, scorer, request, "base"),
            "tuned": _answer_metrics(load_model(adapter, model_id), gated, build_prompt, scorer, request, version),
        }
        metrics["verdict_vs_base"] = gate.compare(metrics["tuned"], metrics["base"]).as_dict()
        metrics["loss"] = {
            "heldout_ppl_base": round(result.heldout_ppl_base, 4),
            "heldout_ppl_tuned": round(result.best.heldout_ppl, 4),
            "epochs": [asdict(e) | {"heldout_ppl": round(e.heldout_ppl, 4)} for e in result.epochs],
            "best_epoch": result.best_epoch,
        }
        recorded = registry.record(
            ModelVersion(
                version=version,
                base_model=base.model_id,
                model_id=model_id,
                base_path=str(base.path),
                base_sha256=base.sha256,
                adapter_path=str(adapter.relative_to(registry.data_dir)),
                adapter_sha256=sha256_of(adapter),
                adapter_bytes=adapter.stat().st_size,
                data_hash=data.snapshot_hash(),
                train_examples=len(data.train),
                heldout_examples=len(data.heldout),
                heldout_path=str((folder / "heldout.jsonl").relative_to(registry.data_dir)),
                settings={
                    **asdict(request),
                    "lora_alpha": config.alpha,
                    "target_modules": list(config.target_modules),
                    "warmup_steps": config.warmup_steps,
                    "dropout": config.dropout,
                    "steps": result.steps,
                    "device": result.device,
                    **result.extra,
                },  # fmt: skip
                metrics=metrics,
                request_id=rid,
            )
        )
    except BaseException as exc:  # the compute spent so far is billed; a rerun resumes the training
        status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "error"
        ledger.finish(rid, status=status, error=f"{type(exc).__name__}: {exc}"[:500],
                      measurement=Measurement(training_s=time.perf_counter() - began, model_id=model_id))  # fmt: skip
        raise
    seconds = time.perf_counter() - began
    ledger.finish(rid, measurement=Measurement(training_s=seconds, prompt_tokens=result.train_tokens,
                                               model_id=model_id, device=result.device))  # fmt: skip
    (folder / "report.json").write_text(json.dumps({"version": version, "seconds": round(seconds, 1),
                                                    "metrics": metrics}, indent=2))  # fmt: skip
    return TuneOutcome(recorded, data, result, seconds, metrics)


class TuneDataError(Exception):
    """Not enough material to fine-tune on (operator-facing)."""


def evaluate_version(
    model: ChatModel,
    examples: Sequence[TuneExample],
    build_prompt: gate.PromptBuilder,
    scorer: gate.Scorer,
    *,
    answer_tokens: int = 160,
    progress: bool = True,
    label: str = "held-out answers",
) -> dict[str, Any]:
    """Held-out figures of one model on examples (what activation compares when splits differ)."""
    answers = gate.generate_answers(model, examples, build_prompt, max_tokens=answer_tokens,
                                    progress=_bar if progress else None, label=label)  # fmt: skip
    return gate.heldout_metrics(answers, scorer)


def _answer_metrics(model: ChatModel, examples: Sequence[TuneExample], build_prompt: gate.PromptBuilder,
                    scorer: gate.Scorer, request: TuneRequest, label: str) -> dict[str, Any]:  # fmt: skip
    try:
        return evaluate_version(model, examples, build_prompt, scorer, answer_tokens=request.answer_tokens,
                                label=f"held-out answers ({label})")  # fmt: skip
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()


def gate_examples(examples: Sequence[TuneExample], limit: int | None, seed: int) -> list[TuneExample]:
    """The held-out examples the gate measures: all of them, or a seeded sample of `limit`."""
    if limit is None or len(examples) <= limit:
        return list(examples)
    import random

    rng = random.Random(seed)
    picked = rng.sample(range(len(examples)), limit)
    return [examples[i] for i in sorted(picked)]


def recorded_gate_examples(data_dir: Path, version: Any) -> list[TuneExample]:
    """The gate's held-out examples of a recorded version (the same ones its figures were measured on)."""
    held = [e for e in load_examples(data_dir / "models" / version.version / "data.jsonl") if e.split == "heldout"]
    return gate_examples(held, version.settings.get("max_heldout"), int(version.settings.get("seed", 13)))


def load_examples(path: Path) -> list[TuneExample]:
    """The examples a version was trained and held out on (models/<version>/data.jsonl)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        row["sources"] = tuple(Source(**{k: v for k, v in s.items()}) for s in row["sources"])
        out.append(TuneExample(**row))
    return out


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def _bar(items: Sequence[TuneExample], desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="q", file=sys.stderr, leave=False)


def _say(text: str, enabled: bool) -> None:
    if enabled:
        print(text, file=sys.stderr)
