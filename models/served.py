"""ServedChatModel: the ChatModel protocol over OpenAI-compatible servers (llama-server, vLLM), with replicas.

Every answer streams through `POST /v1/chat/completions` with `stream_options.include_usage`, on a replica
chosen by models.replicas.ReplicaPool (slots, bounded queue, conversation affinity, health). What each
server flavour gets, detected once per replica by probing (`/props` answers: llama-server; `/version`
answers: vLLM; else a plain OpenAI-compatible server):

* llama-server: our sampling settings (top_k, min_p, repeat_penalty, seed), `cache_prompt`, GBNF `grammar`
  for constrained decisions; its per-request `timings` (prompt_n/prompt_ms/predicted_n/predicted_ms/cache_n)
  are kept raw in Usage.timings; token counting through `/apply-template` + `/tokenize`; per-slot context
  from `/props`.
* vLLM: the same sampling settings in vLLM's names, grammars through `structured_outputs` (vLLM >= 0.10.2,
  `guided_grammar` before); counting through `/tokenize` with the chat messages; context from
  `/v1/models` (`max_model_len`); usage only (vLLM reports no per-request timings).
* other servers: standard fields only; no grammar (the bot's rules decide instead), tokens estimated.

Retries: a request that fails before any of its answer arrived (connection refused or reset, a timeout, a
5xx, the replica dying before its first token) is tried again on another replica (on the same one once all
were tried, e.g. a single local llama-server after its restart), up to `engine_attempts` tries; each failed
try is reported in `failed_attempts` (its own ledger row). Once a piece was handed to the
caller nothing is retried: the failure raises `EngineDiedError` and the bot escalates.

Clock: `queue_wait_s` is the wait for a replica slot; `prefill_s` is request sent -> first piece and
`decode_s` first piece -> end on firstline's wall clock. Concurrent requests on one replica overlap in these,
so they are not the device's compute seconds: billing splits each replica's busy time among the requests
active on its timeline (Usage.replica, sent_at/first_token_at/ended_at; see models.types.Usage).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import httpx

from models.errors import ContextOverflowError, GenerationError, ModelUnavailableError
from models.replicas import Replica, ReplicaPool
from models.settings import ModelSettings
from models.types import ChatMessage, EngineTimings, Generation, Readiness, Usage

log = logging.getLogger(__name__)

DEFAULT_REMOTE_SLOTS = 16
COUNT_CACHE = 512
CHARS_PER_TOKEN_ESTIMATE = 3.0  # conservative for English/German BPE vocabularies (estimates over-count)


class EngineDiedError(GenerationError):
    """The replica failed after part of the answer had been received (no retry: the customer saw it)."""


class _Retryable(Exception):
    """A try failed before any piece arrived; `take_out` says whether the replica is unhealthy."""

    def __init__(self, message: str, *, take_out: bool) -> None:
        super().__init__(message)
        self.take_out = take_out


def root_url(url: str) -> str:
    """'http://h:8080/v1/' -> 'http://h:8080' (the server's root, where /health and /tokenize live)."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def affinity_key(messages: list[ChatMessage]) -> str:
    """A conversation's key: its system message and first customer turn (what later turns' prompts start with)."""
    head = [m for m in messages if m.role == "system"][:1] + [m for m in messages if m.role == "user"][:1]
    digest = hashlib.sha1("\x1e".join(f"{m.role}\x1f{m.content}" for m in head).encode())
    return digest.hexdigest()


def estimate_tokens(messages: list[ChatMessage]) -> int:
    """Tokens a prompt takes where the server cannot count them (over-estimates; 8 per message for the template)."""
    return sum(math.ceil(len(m.content) / CHARS_PER_TOKEN_ESTIMATE) + 8 for m in messages) + 8


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


class ServedChatModel:
    """A ChatModel whose answers are computed by OpenAI-compatible servers; thread-safe, many requests at once."""

    def __init__(
        self,
        urls: list[str],
        settings: ModelSettings | None = None,
        *,
        engine: str = "openai",
        slots: int | None = None,
        model_id: str | None = None,
        device: str | None = None,
        start_prober: bool = True,
    ) -> None:
        """Probe every replica once (short timeouts), then keep probing them in the background."""
        self.settings = settings or ModelSettings()
        s = self.settings
        if not urls:
            raise ModelUnavailableError("no engine URLs configured (FIRSTLINE_ENGINE_URLS)")
        self.engine = engine
        self._explicit_slots = slots or s.engine_slots
        self._model_id = model_id or s.engine_model
        self._device = device or s.engine_device or "remote"
        headers = {"Authorization": f"Bearer {s.engine_api_key}"} if s.engine_api_key else {}
        per_replica = self._explicit_slots or DEFAULT_REMOTE_SLOTS
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(s.engine_timeout_s, connect=s.engine_connect_timeout_s),
            limits=httpx.Limits(max_connections=len(urls) * (per_replica + 4), max_keepalive_connections=64),
        )
        self.probe_timeout = httpx.Timeout(max(1.0, min(5.0, s.engine_health_interval_s)))
        self.pool = ReplicaPool(
            [Replica(root_url(u), per_replica) for u in urls],
            probe=self._probe,
            queue_size=s.engine_queue,
            queue_timeout_s=s.engine_queue_timeout_s,
            unavailable_s=s.engine_unavailable_s,
            interval_s=s.engine_health_interval_s,
            start_prober=False,
        )
        self._counts: OrderedDict[tuple[tuple[str, str], ...], int] = OrderedDict()
        self._counts_lock = threading.Lock()
        self.pool.probe_all()
        if start_prober:
            self.pool._prober = threading.Thread(target=self.pool._probe_loop, name="replica-prober", daemon=True)
            self.pool._prober.start()

    # -- the ChatModel protocol --------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        if self._model_id:
            return self._model_id
        for r in self.pool.replicas:
            if r.info.get("model"):
                return str(r.info["model"])
        return "unknown"

    @property
    def device(self) -> str:
        return self._device

    @property
    def n_ctx(self) -> int:
        known = [int(str(r.info["n_ctx"])) for r in self.pool.replicas if r.info.get("n_ctx")]
        return min(known) if known else self.settings.n_ctx

    @property
    def supports_grammar(self) -> bool:
        """Can this engine constrain an answer with a grammar (else the bot's rules decide alone)?"""
        mode = self.settings.engine_grammar
        if mode != "auto":
            return mode != "off"
        known = [r.flavour for r in self.pool.replicas if r.flavour]
        return bool(known) and all(f in ("llama-server", "vllm") for f in known)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        key = tuple((m.role, m.content) for m in messages)
        with self._counts_lock:
            if key in self._counts:
                self._counts.move_to_end(key)
                return self._counts[key]
        n = self._count(messages)
        with self._counts_lock:
            self._counts[key] = n
            while len(self._counts) > COUNT_CACHE:
                self._counts.popitem(last=False)
        return n

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        grammar: str | None = None,
    ) -> Generation:
        return _ServedGeneration(self, list(messages), max_tokens, temperature, grammar)

    def complete(self, messages: list[ChatMessage], **kwargs: Any) -> tuple[str, Usage]:
        """Generate a whole answer in one non-streamed response; returns (text, usage)."""
        gen = _ServedGeneration(self, list(messages), kwargs.get("max_tokens"), kwargs.get("temperature"),
                                kwargs.get("grammar"), streamed=False)  # fmt: skip
        text = "".join(gen)
        assert gen.usage is not None
        return text, gen.usage

    def readiness(self) -> Readiness:
        """Ready while at least one replica answers /health (probed every engine_health_interval_s)."""
        return self.pool.readiness()

    def close(self) -> None:
        self.pool.close()
        self.client.close()

    # -- requests ----------------------------------------------------------------------------------------
    def request_body(
        self, replica: Replica, messages: list[ChatMessage], max_tokens: int | None, temperature: float | None,
        grammar: str | None, *, streamed: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        """The /v1/chat/completions body for this replica's flavour."""
        s = self.settings
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": streamed,
            "max_tokens": max_tokens or s.max_tokens,
            "temperature": s.temperature if temperature is None else temperature,
            "top_p": s.top_p,
            "seed": s.seed,
        }
        if streamed:
            body["stream_options"] = {"include_usage": True}
        flavour = replica.flavour
        if flavour == "llama-server":
            body.update(top_k=s.top_k, min_p=s.min_p, repeat_penalty=s.repeat_penalty, cache_prompt=True)
        elif flavour == "vllm":
            body.update(top_k=s.top_k or -1, min_p=s.min_p, repetition_penalty=s.repeat_penalty)
        if grammar:
            mode: str = s.engine_grammar
            if mode == "auto":
                mode = {"llama-server": "gbnf", "vllm": "vllm"}.get(flavour, "off")
            if mode == "gbnf":
                body["grammar"] = grammar
            elif mode == "vllm":
                if _version(str(replica.info.get("version", "0.10.2"))) >= (0, 10, 2):
                    body["structured_outputs"] = {"grammar": grammar}
                else:
                    body["guided_grammar"] = grammar
            else:
                raise GenerationError(f"replica {replica.url} cannot constrain answers with a grammar")
        return body

    def _count(self, messages: list[ChatMessage]) -> int:
        replicas = self.pool.healthy() or self.pool.replicas
        payload = [{"role": m.role, "content": m.content} for m in messages]
        for replica in replicas:
            try:
                if replica.flavour == "llama-server":
                    prompt = self._post_json(replica, "/apply-template", {"messages": payload})["prompt"]
                    body = {"content": prompt, "add_special": True, "parse_special": True}
                    return len(self._post_json(replica, "/tokenize", body)["tokens"])
                if replica.flavour == "vllm":
                    body = {"model": self.model_id, "messages": payload, "add_generation_prompt": True}
                    return int(self._post_json(replica, "/tokenize", body)["count"])
            except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
                log.warning("counting tokens on %s failed (%s); trying the next replica", replica.url, exc)
                continue
        return estimate_tokens(messages)

    def _post_json(self, replica: Replica, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.post(replica.url + path, json=body, timeout=self.probe_timeout)
        resp.raise_for_status()
        data = resp.json()
        if not isinstance(data, dict):
            raise ValueError(f"{path} answered {type(data).__name__}, not an object")
        return data

    # -- probing -----------------------------------------------------------------------------------------
    def _probe(self, replica: Replica) -> tuple[bool, str]:
        """(healthy, detail) from GET /health; learns the flavour, slots, context and model once."""
        try:
            resp = self.client.get(replica.url + "/health", timeout=self.probe_timeout)
        except httpx.HTTPError as exc:
            return False, f"/health: {type(exc).__name__}: {exc}"
        if resp.status_code == 404:  # a server without /health: its model list must answer
            try:
                resp = self.client.get(replica.url + "/v1/models", timeout=self.probe_timeout)
            except httpx.HTTPError as exc:
                return False, f"/v1/models: {type(exc).__name__}: {exc}"
        if resp.status_code != 200:
            return False, f"/health answered {resp.status_code}: {resp.text.strip()[:160]}"
        if not replica.flavour:
            try:
                self._learn(replica)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                return False, f"healthy, but describing it failed: {type(exc).__name__}: {exc}"
        return True, f"ok ({replica.flavour})"

    def _learn(self, replica: Replica) -> None:
        get = self.client.get
        info: dict[str, object] = {}
        props = get(replica.url + "/props", timeout=self.probe_timeout)
        flavour = "openai"
        if props.status_code == 200 and "total_slots" in (data := props.json()):
            flavour = "llama-server"
            info["n_ctx"] = int(data.get("default_generation_settings", {}).get("n_ctx") or 0) or None
            info["slots"] = int(data["total_slots"])
            info["build"] = str(data.get("build_info", ""))
        else:
            version = get(replica.url + "/version", timeout=self.probe_timeout)
            if version.status_code == 200 and "version" in (vdata := version.json()):
                flavour = "vllm"
                info["version"] = str(vdata["version"])
        models = get(replica.url + "/v1/models", timeout=self.probe_timeout)
        if models.status_code == 200:
            listed = models.json().get("data") or []
            if listed:
                info["model"] = str(listed[0].get("id", ""))
                if listed[0].get("max_model_len"):
                    info["n_ctx"] = int(listed[0]["max_model_len"])
        with self.pool._cond:
            replica.info.update({k: v for k, v in info.items() if v is not None})
            replica.flavour = flavour
            if self._explicit_slots is None and info.get("slots"):
                replica.slots = int(str(info["slots"]))
        log.info("replica %s: %s, %s slots, model %s, context %s", replica.url, flavour, replica.slots,
                 info.get("model"), info.get("n_ctx"))  # fmt: skip


class _ServedGeneration(Generation):
    """One streamed answer; tries replicas until one starts answering (see the module docstring)."""

    def __init__(
        self,
        owner: ServedChatModel,
        messages: list[ChatMessage],
        max_tokens: int | None,
        temperature: float | None,
        grammar: str | None,
        *,
        streamed: bool = True,
    ) -> None:
        self.usage: Usage | None = None
        self.failed_attempts: list[Usage] = []  # tries that failed before any piece arrived (models.types)
        self._streamed = streamed
        self._owner = owner
        self._args = (messages, max_tokens, temperature, grammar)
        self._key = affinity_key(messages)
        self._started = self._finished = False
        self._replica: Replica | None = None
        self._response: httpx.Response | None = None
        self._lines: Iterator[str] | None = None
        self._tried: set[str] = set()
        self._attempt = 0
        self._new_try()

    def _new_try(self) -> None:
        self._t_call = time.perf_counter()
        self._queue_wait = 0.0
        self._t_sent = self._t_first = 0.0
        self._wall_sent: float | None = None
        self._wall_first: float | None = None
        self._pieces = 0
        self._finish_reason = "length"
        self._reported: dict[str, Any] = {}
        self._timings: dict[str, Any] | None = None

    # -- iteration -------------------------------------------------------------------------------------
    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        if not self._started:
            self._started = True
            self._t_call = time.perf_counter()
        while True:
            try:
                if self._lines is None:
                    self._start_try()
                piece = self._read_piece()
            except _Retryable as exc:
                self._fail_try(str(exc), exc.take_out)  # raises once no try is left
                continue
            except BaseException as exc:
                self._fail(exc)
                raise
            if piece is None:
                self._end(self._finish_reason, estimated=not self._reported)
                raise StopIteration
            return piece

    def close(self) -> None:
        if self._finished:
            return
        if not self._started:  # never started: nothing ran
            self._finished = True
            return
        self._end("cancelled", estimated=True)

    def __del__(self) -> None:  # an abandoned generation must give its slot back
        if self._started and not self._finished:
            self._end("cancelled", estimated=True)

    # -- one try -----------------------------------------------------------------------------------------
    def _start_try(self) -> None:
        """Take a slot on a replica (waiting in the queue) and send the request; raises _Retryable when this
        replica cannot start the answer, GenerationError when no replica would (a bad request)."""
        owner = self._owner
        # a retry goes to a replica not tried yet; once all were, any (a single local server after its restart)
        untried = any(r.url not in self._tried for r in owner.pool.replicas)
        replica = owner.pool.acquire(self._key, exclude=self._tried if untried else ())  # raises when none
        self._replica = replica
        self._attempt += 1
        self._queue_wait = time.perf_counter() - self._t_call
        body = owner.request_body(replica, *self._args, streamed=self._streamed)
        self._t_sent, self._wall_sent = time.perf_counter(), time.time()
        try:
            request = owner.client.build_request("POST", replica.url + "/v1/chat/completions", json=body)
            self._response = response = owner.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _Retryable(f"replica {replica.url}: {type(exc).__name__}: {exc}", take_out=True) from exc
        if response.status_code != 200:
            try:
                text = response.read().decode("utf-8", "replace").strip()
            except httpx.HTTPError:
                text = ""
            message = _error_message(text) or response.reason_phrase
            cause = f"replica {replica.url} answered HTTP {response.status_code}: {message}"[:400]
            if response.status_code in (429, 500, 502, 503, 504):
                raise _Retryable(cause, take_out=response.status_code in (502, 503, 504))
            if response.status_code == 400 and any(w in message.lower() for w in ("context", "too long")):
                raise ContextOverflowError(cause)
            raise GenerationError(cause)
        if self._streamed:
            self._lines = response.iter_lines()
            return
        try:  # one JSON document: replayed below as the SSE lines of a stream with one piece
            whole = json.loads(response.read())
        except (httpx.HTTPError, ValueError) as exc:
            raise _Retryable(f"replica {replica.url} failed while answering: {type(exc).__name__}: {exc}",
                             take_out=isinstance(exc, httpx.TransportError)) from exc  # fmt: skip
        said = (whole.get("choices") or [{}])[0].get("message") or {}
        finish = (whole.get("choices") or [{}])[0].get("finish_reason")
        chunk = {"choices": [{"delta": {"content": said.get("content") or ""}, "finish_reason": finish}],
                 "usage": whole.get("usage"), "timings": whole.get("timings")}  # fmt: skip
        self._lines = iter([f"data: {json.dumps(chunk)}", "data: [DONE]"])

    def _read_piece(self) -> str | None:
        """The next non-empty text piece, or None at the end of the answer."""
        assert self._lines is not None
        try:
            for line in self._lines:
                if not line.startswith("data:"):
                    continue  # SSE comments (": ping"), event names, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    return None
                chunk = json.loads(data)
                if isinstance(chunk, dict) and "error" in chunk:
                    raise GenerationError(f"{self._where()}: {_error_message(data)}"[:400])
                piece = self._take_chunk(chunk)
                if piece:
                    if not self._pieces and self._streamed:  # a whole response has no first-token instant
                        self._t_first, self._wall_first = time.perf_counter(), time.time()
                    self._pieces += 1
                    return piece
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            cause = f"{self._where()} failed while answering: {type(exc).__name__}: {exc}"[:400]
            connection = isinstance(exc, httpx.TransportError)
            if not self._pieces:
                raise _Retryable(cause, take_out=connection) from exc
            if connection and self._replica is not None:
                self._owner.pool.mark_failed(self._replica, cause)
            raise EngineDiedError(cause) from exc
        if not self._pieces:  # the stream ended without [DONE] and without text: the replica gave up
            raise _Retryable(f"{self._where()} closed the stream without an answer", take_out=True)
        raise EngineDiedError(f"{self._where()} closed the stream mid-answer")

    def _take_chunk(self, chunk: dict[str, Any]) -> str:
        if chunk.get("usage"):
            self._reported = dict(chunk["usage"])
        if chunk.get("timings"):
            self._timings = dict(chunk["timings"])
        text = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text.append(str(delta["content"]))
            if choice.get("finish_reason"):
                self._finish_reason = str(choice["finish_reason"])
        return "".join(text)

    def _where(self) -> str:
        return f"replica {self._replica.url}" if self._replica else "the engine"

    # -- endings -----------------------------------------------------------------------------------------
    def _fail_try(self, cause: str, take_out: bool) -> None:
        """This try failed before any piece arrived: record it and free its slot; raise if no try is left."""
        replica = self._replica
        if replica is not None:
            if take_out:
                self._owner.pool.mark_failed(replica, cause)
            self._tried.add(replica.url)
        self._end("error", estimated=True, error=cause, final=False)
        attempts = self._owner.settings.engine_attempts
        if self._attempt >= attempts:
            self.usage = self.failed_attempts.pop()  # the last try is the request's own ledger row
            self._finished = True
            raise ModelUnavailableError(f"the engine failed after {self._attempt} tries: {cause}")
        log.warning("%s; retrying on another replica (try %d of %d)", cause, self._attempt + 1, attempts)
        self._new_try()

    def _fail(self, exc: BaseException) -> None:
        if self._finished:
            return
        if self._replica is None and self.failed_attempts:  # no slot after a failed try: that try is the row
            self.usage = self.failed_attempts.pop()
            self._finished = True
            return
        self._end("error", estimated=True, error=f"{exc}"[:400] or type(exc).__name__)

    def _end(self, finish: str, *, estimated: bool, error: str = "", final: bool = True) -> None:
        """Close this try's response, give its slot back and record its usage."""
        if self._response is not None:
            try:
                self._response.close()
            except Exception:  # closing a broken connection must not hide the cause
                log.debug("closing the response failed", exc_info=True)
            self._response = None
        self._lines = None
        replica, self._replica = self._replica, None
        usage = self._usage(replica, finish, estimated, error)
        if replica is not None:
            self._owner.pool.release(replica)
        if final:
            self.usage = usage
            self._finished = True
        else:
            self.failed_attempts.append(usage)

    def _usage(self, replica: Replica | None, finish: str, estimated: bool, error: str) -> Usage:
        owner = self._owner
        now, wall_now = time.perf_counter(), time.time()
        reported = self._reported
        details = reported.get("prompt_tokens_details") or {}
        t = self._timings
        timings = None
        if t:
            timings = EngineTimings(
                prompt_n=_int(t.get("prompt_n")), prompt_ms=_float(t.get("prompt_ms")),
                predicted_n=_int(t.get("predicted_n")), predicted_ms=_float(t.get("predicted_ms")),
                cache_n=_int(t.get("cache_n")), source="llama-server",
            )  # fmt: skip
        elif reported:
            timings = EngineTimings(
                prompt_n=_int(reported.get("prompt_tokens")),
                predicted_n=_int(reported.get("completion_tokens")),
                cache_n=_int(details.get("cached_tokens")),
                source="openai-usage",
            )
        flavour = replica.flavour if replica is not None else ""
        return Usage(
            prompt_tokens=_int(reported.get("prompt_tokens")) or 0,
            completion_tokens=_int(reported.get("completion_tokens")) or self._pieces,
            queue_wait_s=self._queue_wait,
            prefill_s=((self._t_first or now) - self._t_sent) if self._t_sent else 0.0,
            decode_s=(now - self._t_first) if self._t_first else 0.0,
            model_id=owner.model_id,
            device=owner.device,
            cached_tokens=_int(details.get("cached_tokens")) or 0,
            finish_reason=finish,
            engine=flavour if flavour in ("llama-server", "vllm") else owner.engine,
            replica=replica.url if replica is not None else "",
            sent_at=self._wall_sent,
            first_token_at=self._wall_first,
            ended_at=wall_now if self._wall_sent is not None else None,
            timings=timings,
            estimated=estimated or not reported,
            attempt=max(1, self._attempt),
            error=error,
        )


def _error_message(text: str) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}} or {"message": ...})."""
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:300]
        return str(err)[:300]
    return text[:300]


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
