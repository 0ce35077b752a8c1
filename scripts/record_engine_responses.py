"""Record llama-server's HTTP answers for the engine contract tests (tests/data/engines/llama-server/).

Starts the pinned llama-server (scripts/build-llama-server.sh) on the bundled model with the flags firstline
uses, sends the requests firstline sends (streamed and not, with and without a grammar, token counting, a
prompt too long for a slot) and writes each exchange, response bytes as they came, to one JSON file:

    .venv/bin/python scripts/record_engine_responses.py            # starts the pinned llama-server
    .venv/bin/python scripts/record_engine_responses.py --flavour vllm --url http://GPU-HOST:8000 --model NAME

Re-record after updating llama-cpp-python (its vendored llama.cpp is what llama-server is built from). The
second form records a running server instead (e.g. vLLM on a GPU host, where the vLLM files are otherwise
written from vLLM's source: tests/data/engines/vllm/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.escalation import DECISION_MAX_TOKENS  # noqa: E402
from models import loader  # noqa: E402
from models.llama_server import LlamaServerProcess, find_llama_server, free_port, server_argv  # noqa: E402
from models.settings import ModelSettings  # noqa: E402

QUESTION = "How do I reset my router to factory settings?"
SYSTEM = "You are the support assistant of Lumen Networks. Answer briefly."
DECISION = (
    "You decide whether a customer support chat must be handed to a human colleague. Reply 'escalate' if "
    "the customer is angry, complains, asks for a person, or needs account-specific help; otherwise reply "
    "'answer'.\n\nCustomer message: I want to talk to a real person now!\n\nDecision:"
)
GRAMMAR = 'root ::= "answer" | "escalate"'


def exchanges(flavour: str, model: str) -> dict[str, tuple[str, str, dict[str, Any] | None]]:
    """name -> (method, path, body): what firstline sends to this server flavour."""
    chat: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "max_tokens": 24, "temperature": 0.0, "top_p": 0.95, "seed": 42, "top_k": 40, "min_p": 0.05,
    }  # fmt: skip
    constraint: dict[str, Any]
    if flavour == "vllm":
        chat["repetition_penalty"] = 1.1
        constraint = {"structured_outputs": {"grammar": GRAMMAR}}
    else:
        chat.update(repeat_penalty=1.1, cache_prompt=True)
        constraint = {"grammar": GRAMMAR}
    decision = {**chat, "messages": [{"role": "user", "content": DECISION}], "max_tokens": DECISION_MAX_TOKENS,
                **constraint}  # fmt: skip
    long_prompt = {**chat, "messages": [{"role": "user", "content": "word " * (2000 if flavour != "vllm" else 200000)}]}
    usage = {"stream": True, "stream_options": {"include_usage": True}}
    found: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "health": ("GET", "/health", None),
        "props": ("GET", "/props", None),
        "version": ("GET", "/version", None),
        "models": ("GET", "/v1/models", None),
        "chat_stream": ("POST", "/v1/chat/completions", {**chat, **usage}),
        "chat": ("POST", "/v1/chat/completions", {**chat, "stream": False}),
        "chat_grammar_stream": ("POST", "/v1/chat/completions", {**decision, **usage}),
        "chat_grammar": ("POST", "/v1/chat/completions", {**decision, "stream": False}),
        "chat_context_error": ("POST", "/v1/chat/completions", {**long_prompt, **usage}),
    }
    if flavour == "vllm":
        found["tokenize"] = ("POST", "/tokenize", {"model": model, "messages": chat["messages"],
                                                   "add_generation_prompt": True})  # fmt: skip
    else:
        found["apply_template"] = ("POST", "/apply-template", {"messages": chat["messages"]})
        found["tokenize"] = ("POST", "/tokenize", {"content": "<|im_start|>user\nHello<|im_end|>\n",
                                                   "add_special": True, "parse_special": True})  # fmt: skip
    return found


def record(url: str, out: Path, flavour: str, model: str, headers: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=120, headers=headers) as client:
        for name, (method, path, body) in exchanges(flavour, model).items():
            # a fresh connection per exchange: llama-server drops a kept-alive connection after a streamed
            # answer read to its end, so reusing it failed at random ("Server disconnected")
            resp = client.request(method, url + path, json=body, headers={"Connection": "close"})
            if flavour == "llama-server" and name == "version":
                continue  # llama-server has no /version (404), as the replay server answers by default
            record = {
                "method": method,
                "path": path,
                "request": body,
                "status": resp.status_code,
                "content_type": resp.headers.get("content-type", ""),
                "body": resp.text,
            }
            (out / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
            print(f"{name}: HTTP {resp.status_code}, {len(resp.text)} characters")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", choices=["llama-server", "vllm"], default="llama-server")
    parser.add_argument("--url", help="record this running server instead of starting the pinned llama-server")
    parser.add_argument("--model", help="model name to send (default: the bundled model's file name)")
    parser.add_argument("--api-key", help="bearer token for the server")
    parser.add_argument("--out", type=Path, help="default: tests/data/engines/<flavour>")
    args = parser.parse_args()
    out: Path = args.out or ROOT / "tests" / "data" / "engines" / args.flavour
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if args.url:
        record(args.url.rstrip("/").removesuffix("/v1"), out, args.flavour, args.model or "default", headers)
        return 0
    settings = ModelSettings(n_ctx=512, n_threads=2, temperature=0.0)
    model, _ = loader.resolve_model(None, None)
    alias = args.model or model.name.removesuffix(".gguf")
    port = free_port()
    argv = server_argv(find_llama_server(), model, settings, port=port, slots=2, alias=alias)
    url = f"http://127.0.0.1:{port}"
    server = LlamaServerProcess(argv, url, Path(tempfile.mkdtemp()) / "llama-server.log", start_timeout_s=60)
    try:
        record(url, out, "llama-server", alias, headers)
        build = httpx.get(url + "/props", timeout=10).json().get("build_info", "")
    finally:
        server.stop()
    flags = " ".join(a if not a.startswith("/") else Path(a).name for a in argv[1:])
    (out / "BUILD").write_text(f"llama-server {build} (llama-cpp-python's vendored llama.cpp)\n{flags}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
