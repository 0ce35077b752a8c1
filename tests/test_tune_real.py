"""A tiny fine-tune of the bundled model, end to end (real-model tier; needs the `tune` extra, which
`make test` installs): a handful of steps on a few examples produce an adapter that loads in the serving
path and changes its output, the version is recorded and serves after activation, the ledger names it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the tune extra is not installed (make test installs it)")

from bot.tuning.registry import ModelRegistry  # noqa: E402
from models.loader import DEFAULT_MODEL_SHA256, sha256_of  # noqa: E402
from models.types import ChatMessage  # noqa: E402
from usage.ledger import Ledger  # noqa: E402

pytestmark = pytest.mark.real_model
ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Mein Router blinkt seit heute morgen orange, was bedeutet das?"


def _cli(data_dir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FIRSTLINE_DATA_DIR": str(data_dir), "FIRSTLINE_TEMPERATURE": "0",
           "FIRSTLINE_MAX_TOKENS": "48"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "ui.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """One tiny tune (3 steps on 12 examples, a high learning rate so that 3 steps show)."""
    data_dir = tmp_path_factory.mktemp("tiny-tune")
    done = _cli(data_dir, "tune", "--max-steps", "3", "--max-examples", "12", "--max-heldout", "2",
                "--batch-size", "2", "--learning-rate", "0.003", "--quiet", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    yield data_dir, json.loads(done.stdout)


def test_a_tiny_tune_records_a_version(tuned: tuple[Path, dict[str, Any]]) -> None:
    data_dir, out = tuned
    assert out["version"] == "v1" and out["model_id"] == "SmolLM2-135M-Instruct.Q4_1+lora-v1"
    assert out["train_examples"] + out["heldout_examples"] <= 12 and out["heldout_examples"] >= 1
    assert out["heldout_ppl_base"] > 1.0 and out["heldout_ppl_tuned"] > 1.0
    assert set(out["metrics"]) == {"base", "tuned"}
    for side in out["metrics"].values():
        assert side["examples"] == min(2, out["heldout_examples"]) and side["compute_s"] > 0
    registry = ModelRegistry(data_dir / "firstline.db")
    try:
        version = registry.get("v1")
        adapter = registry.adapter_file(version)
        assert adapter.is_file() and sha256_of(adapter) == version.adapter_sha256 == out["adapter_sha256"]
        assert version.base_sha256 == DEFAULT_MODEL_SHA256 and version.data_hash == out["data_hash"]
        assert version.settings["max_steps"] == 3 and version.settings["steps"] == 3
        assert registry.active_name() == "base"  # recorded, not serving
    finally:
        registry.close()
    rows = [json.loads(line) for line in (data_dir / "models" / "v1" / "data.jsonl").read_text().splitlines()]
    train_groups = {r["group"] for r in rows if r["split"] == "train"}
    assert not train_groups & {r["group"] for r in rows if r["split"] == "heldout"}


def test_the_ledger_prices_the_tune_as_its_own_route(tuned: tuple[Path, dict[str, Any]]) -> None:
    data_dir, out = tuned
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
    try:
        (row,) = ledger.rows("route = 'training'")
    finally:
        ledger.close()
    assert row["status"] == "completed" and row["model_id"] == out["model_id"]
    assert row["conversation_id"] == "training:v1" and row["device"] == "CPU"
    assert row["training_s"] > 0 and row["compute_s"] == pytest.approx(row["training_s"])
    assert row["cost_micros"] > 0 and row["prompt_tokens"] > 0


def test_the_adapter_loads_in_the_serving_path_and_changes_its_output(tuned: tuple[Path, dict[str, Any]]) -> None:
    from bot.tuning.pipeline import load_examples
    from models.fake import ScriptedChatModel
    from models.gguf_export import answer_nll
    from models.llama import LlamaChatModel
    from models.settings import ModelSettings
    from models.tuning import ExampleEncoder
    from ui.app import build_services
    from ui.cli.tune import prompt_builder

    data_dir, _ = tuned
    adapter = data_dir / "models" / "v1" / "adapter.gguf"
    settings = ModelSettings(temperature=0.0, max_tokens=40, n_ctx=4096)
    train = [e for e in load_examples(data_dir / "models" / "v1" / "data.jsonl") if e.split == "train"]
    services = build_services(data_dir, model=ScriptedChatModel(), demo_kb=False)
    try:  # the prompts exactly as the bot sends them (and as the tune trained on them)
        build = prompt_builder(services.bot)
        prompts = [build(e.question, e.lang, e.sources) for e in train]
    finally:
        services.close()
    answerable = next(p for p, e in zip(prompts, train, strict=True) if e.answerable)
    base = LlamaChatModel(settings)
    tuned_model = LlamaChatModel(settings, load_options={"lora_path": str(adapter)}, model_id="v1")
    try:
        before, _ = base.complete(answerable)
        after, usage = tuned_model.complete(answerable)
    finally:
        base.close()
        tuned_model.close()
    assert usage.model_id == "v1"
    assert after != before  # three steps at a high learning rate move greedy decoding (even to an early stop)
    # llama.cpp applying the adapter agrees with torch: the training examples got more likely (on average:
    # three steps of two examples need not have seen each of them)
    encoder = ExampleEncoder(base.path)
    try:
        examples = [encoder.encode(p, e.answer) for p, e in zip(prompts, train, strict=True)]
    finally:
        encoder.close()
    assert answer_nll(base.path, examples, adapter) < answer_nll(base.path, examples)


def test_the_adapter_merged_into_the_base_exports_and_keeps_the_tune(tuned: tuple[Path, dict[str, Any]]) -> None:
    """The other way out (measured against the adapter by `make bench-tune`): merged into the base by llama.cpp's
    `llama-export-lora` and re-quantized to Q8_0. The earlier torch merge written by `convert_hf_to_gguf.py`
    failed (sentencepiece missing) and, with it installed, produced a file llama.cpp aborted on."""
    from bot.tuning.pipeline import load_examples
    from models.gguf_export import answer_nll, export_merged
    from models.tuning import ExampleEncoder

    data_dir, _ = tuned
    folder = data_dir / "models" / "v1"
    registry = ModelRegistry(data_dir / "firstline.db")
    try:
        base = Path(registry.get("v1").base_path)
    finally:
        registry.close()
    merged = export_merged(base, folder / "adapter.gguf", folder / "merged-q8_0.gguf", "q8_0")
    train = [e for e in load_examples(folder / "data.jsonl") if e.split == "train" and e.answerable]
    encoder = ExampleEncoder(base)
    try:  # a short prompt is enough to compare the files: same model either way
        examples = [encoder.encode([ChatMessage("user", e.question)], e.answer) for e in train[:4]]
    finally:
        encoder.close()
    with_adapter, merged_nll = answer_nll(base, examples, folder / "adapter.gguf"), answer_nll(merged, examples)
    assert merged_nll == pytest.approx(with_adapter, rel=0.05)  # Q8_0 keeps what the adapter learnt
    assert merged_nll != pytest.approx(answer_nll(base, examples), rel=1e-4)  # and it is not the base


def test_the_activated_version_serves_and_the_ledger_names_it(tuned: tuple[Path, dict[str, Any]]) -> None:
    data_dir, out = tuned
    refused = _cli(data_dir, "models", "activate", "v1")
    if refused.returncode == 0:  # three steps happened to beat the base: activation went through
        assert "is active" in refused.stdout
    else:
        assert refused.returncode == 2 and "not better than base" in refused.stderr
        forced = _cli(data_dir, "models", "activate", "v1", "--force", "--reason", "test", "--json")
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout)["forced"] is True
    listed = json.loads(_cli(data_dir, "models", "list", "--json").stdout)["models"]
    assert [m["version"] for m in listed if m["active"]] == ["v1"]
    asked = _cli(data_dir, "ask", QUESTION, "--json")
    assert asked.returncode == 0, asked.stderr[-2000:]
    request_id = json.loads(asked.stdout)["request_id"]
    ledger = Ledger(data_dir / "firstline.db", heartbeat=False)
    try:
        row = ledger.get(request_id)
    finally:
        ledger.close()
    assert row is not None and row["model_id"] == out["model_id"]
    report = _cli(data_dir, "report", "--by", "model", "--json")
    keys = {r["model"] if "model" in r else r.get("key") for r in json.loads(report.stdout)["rows"]}
    assert out["model_id"] in keys
    back = _cli(data_dir, "models", "rollback", "--json")
    assert back.returncode == 0 and json.loads(back.stdout)["active"] == "base"


def test_an_interrupted_training_resumes_at_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import tuning
    from models.loader import default_model_path

    path = default_model_path()
    encoder = tuning.ExampleEncoder(path)
    try:
        examples = [encoder.encode([ChatMessage("user", f"What is {n} plus {n}?")], f"{n} plus {n} is {2 * n}.")
                    for n in range(1, 6)]  # fmt: skip
    finally:
        encoder.close()
    train, held = examples[:4], examples[4:]
    config = tuning.TrainConfig(epochs=2, batch_size=1, checkpoint_every=1, layer_share=0.2, threads=2)
    real_loss = tuning._loss
    calls = {"n": 0}

    def failing_loss(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("reduction") == "sum" and args[0].training:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt  # the operator pressed Ctrl-C during the third step
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(tuning, "_loss", failing_loss)
    with pytest.raises(KeyboardInterrupt):
        tuning.LoraTrainer(path, tmp_path / "run", config, progress=False).run(train, held)
    monkeypatch.setattr(tuning, "_loss", real_loss)
    result = tuning.LoraTrainer(path, tmp_path / "run", config, progress=False).run(train, held)
    assert result.resumed_from_step == 2 and result.steps == 8
    assert [e.epoch for e in result.epochs] == [1, 2]
    assert result.best_epoch in (1, 2) and result.adapter_dir.is_dir()
