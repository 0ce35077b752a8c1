"""LlamaChatModel: one llama.cpp model per process behind one lock, streaming with measured timings.

We drive `Llama.generate` ourselves instead of `create_chat_completion`: it lets us measure prefill and
decode time exactly (llama.cpp's own timing print reads zero in current llama-cpp-python), count tokens
exactly, stop on end-of-generation tokens without re-detokenizing the whole answer at every step, and it
keeps llama-cpp-python's prefix reuse: a follow-up turn re-evaluates only the tokens after the longest
prefix it shares with the previous prompt (system prompt and history).

There is one KV cache per process, so a turn of another conversation in between used to cost the next
follow-up its whole history again. A `StateCache` (models/state_cache.py) saves the live sequence state
just before a different prompt overwrites it, and restores the saved state that shares the longest
prefix with a new prompt when that beats what the live cache offers.

On the CPU every generation step runs on one dedicated thread (`ComputeThread`). llama.cpp's CPU backend
uses OpenMP, which keeps a team of spinning worker threads per *calling* thread: when Gradio's worker
threads took turns calling the model, the previous caller's team was still spinning while the next one
started, and on 2 cores decoding dropped from ~115 to 65-90 tok/s (docs/performance.md). Steps are still
pulled by the consumer one at a time, so time the consumer holds a piece stays out of the compute time.
"""

from __future__ import annotations

import codecs
import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from models import cpu, loader
from models.errors import ContextOverflowError, GenerationError
from models.settings import ModelSettings
from models.state_cache import StateCache, common_prefix
from models.threads import ThreadGovernor
from models.types import ChatMessage, Generation, Usage, inprocess_replica

log = logging.getLogger(__name__)

# Restoring a saved state pays off when it saves re-reading at least this many prompt tokens, and a live
# state is only worth saving when this many of its tokens would otherwise be lost.
MIN_STATE_TOKENS = 32


class ComputeThread:
    """One long-lived thread that runs the calls given to `call` in order (llama.cpp compute on the CPU)."""

    def __init__(self, name: str = "llama-compute") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], _Job] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            fn, job = item
            try:
                job.result = fn()
            except BaseException as exc:  # handed to the caller, StopIteration included
                job.error = exc
            del fn, item  # hold no reference to the caller's objects (an abandoned generation must be freed)
            job.done.set()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the compute thread and return its result (or raise its exception) here."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return fn()
        job = _Job()
        self._jobs.put((fn, job))
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def stop(self) -> None:
        self._jobs.put(None)


class _Job:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.result: Any = None


def _direct(fn: Callable[[], Any]) -> Any:
    return fn()


class LlamaChatModel:
    """The locally hosted model; thread-safe (one generation at a time), load once at start-up."""

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        load_options: dict[str, Any] | None = None,
        model_id: str | None = None,
        compute_thread: bool = True,
        replica: str | None = None,
    ) -> None:
        """Load the model. `load_options` go to llama_cpp.Llama as they are (e.g. `lora_path`); `model_id`
        names what is served (default: the file name); `compute_thread=False` computes on the calling thread
        (the model worker process has exactly one caller); `replica` names its timeline in Usage (default: this
        process, see types.inprocess_replica)."""
        self.settings = settings or ModelSettings()
        path, sha = loader.resolve_model(self.settings.model_path, self.settings.model_sha256)
        loader.check_model_file(path, sha)
        self.path: Path = path
        t0 = time.perf_counter()
        self.system_info = loader.system_info()
        self.buffer_decision = cpu.extra_buffers(
            self.settings.cpu_extra_buffers, cpu.read_cpuinfo(), cpu.build_features(self.system_info)
        )
        # kept so a benchmark can load an identical plain llama_cpp.Llama next to ours
        self.load_kwargs: dict[str, Any] = {
            "n_ctx": self.settings.n_ctx,
            "n_threads": self.settings.n_threads or os.cpu_count() or 1,
            "n_batch": self.settings.n_batch,
            "n_gpu_layers": self.settings.n_gpu_layers,
            "seed": self.settings.seed,
            "flash_attn": self.settings.flash_attn,
            "use_extra_bufts": self.buffer_decision.use_extra_bufts,
            **(load_options or {}),
        }
        loaded = loader.load_llama(path, **self.load_kwargs)
        self._llm = loaded.llm
        self.buffers = loaded.buffers  # weight buffer types llama.cpp allocated -> MiB (CPU_REPACK, AMX, ...)
        self.load_s = time.perf_counter() - t0
        self._lock = threading.Lock()
        self._formatter = loader.chat_formatter(self._llm)
        self._model_id = model_id or path.name.removesuffix(".gguf")
        self.replica = replica or inprocess_replica()
        self._device = loader.detect_device(self.settings.n_gpu_layers)
        self._grammars: dict[str, Any] = {}
        self._states = StateCache(self.settings.prompt_cache_mb * 1024 * 1024)
        # on a GPU the CPU does next to nothing per step and the hand-over would only add latency
        self._compute_thread = ComputeThread() if self._device == "CPU" and compute_thread else None
        n_threads = int(self.load_kwargs["n_threads"])
        adaptive = self.settings.adaptive_threads and self._device == "CPU" and n_threads > 1
        self.governor = ThreadGovernor(n_threads) if adaptive else None
        self._threads_now = n_threads
        self.compute: Callable[[Callable[[], Any]], Any] = (
            self._compute_thread.call if self._compute_thread is not None else _direct
        )
        log.info("loaded %s on %s in %.2fs (extra CPU buffers %s; weights in %s)", self._model_id, self._device,
                 self.load_s, self.buffer_decision.reason, ", ".join(self.buffers) or "?")  # fmt: skip

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def device(self) -> str:
        return self._device

    @property
    def n_ctx(self) -> int:
        return int(self._llm.n_ctx())

    @property
    def llama(self) -> Any:
        """The underlying llama_cpp.Llama (benchmarks compare against it directly)."""
        return self._llm

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    @property
    def state_cache(self) -> StateCache:
        """Saved KV states of recent conversations (benchmarks switch it off with `.enabled = False`)."""
        return self._states

    def reset_cache(self) -> None:
        """Forget the live KV cache and every saved state (the next prompt is prefilled in full)."""
        with self._lock:
            self._llm.reset()
            self._states.clear()

    def adapt_threads(self, *, force: bool = False) -> None:
        """Follow the thread governor (caller holds the lock): fewer threads while other processes take cores."""
        if self.governor is None:
            return
        n = self.governor.update(force=force)
        if n != self._threads_now:
            loader.set_threads(self._llm, n)
            log.info("llama.cpp threads %d -> %d (other processes use %.1f cores)", self._threads_now, n,
                     self.governor.others)  # fmt: skip
            self._threads_now = n

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Prepare the KV cache for `tokens` (caller holds the lock); returns how many are already there."""
        llm = self._llm
        live_tokens = np.asarray(llm.input_ids[: llm.n_tokens], dtype=np.intc)
        prompt = np.asarray(tokens, dtype=np.intc)
        live = common_prefix(live_tokens, prompt)
        states = self._states
        if not states.enabled:
            return live
        hit = states.lookup(prompt)
        if len(live_tokens) - live >= MIN_STATE_TOKENS and not states.covers(live_tokens):
            # this prompt overwrites another conversation's state: keep it for that conversation's next turn
            states.put(live_tokens, loader.save_sequence_state(llm))
        if hit is not None and hit.prefix >= live + MIN_STATE_TOKENS:
            if loader.load_sequence_state(llm, hit.state, hit.tokens):
                states.hits += 1
                return hit.prefix
            log.warning("llama.cpp refused a saved KV state; prefilling the prompt in full")
            return 0
        return live

    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        """Format messages with the model's chat template and tokenize them as llama-cpp-python does."""
        prompt = self._formatter([{"role": m.role, "content": m.content} for m in messages])
        return list(self._llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return len(self.tokenize_prompt(messages))

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        grammar: str | None = None,
    ) -> Generation:
        return _LlamaGeneration(self, messages, max_tokens, temperature, grammar)

    def close(self) -> None:
        """Free the llama.cpp context and weights (waits for a running generation to finish)."""
        with self._lock:
            llm, self._llm = self._llm, None
            if llm is not None:
                llm.close()
            if self._compute_thread is not None:
                self._compute_thread.stop()

    def complete(self, messages: list[ChatMessage], **kwargs: Any) -> tuple[str, Usage]:
        """Generate a whole answer; returns (text, usage)."""
        gen = self.stream(messages, **kwargs)
        text = "".join(gen)
        assert gen.usage is not None
        return text, gen.usage

    def _grammar(self, source: str) -> Any:
        if source not in self._grammars:
            self._grammars[source] = loader.compile_grammar(source)
        return self._grammars[source]


class _LlamaGeneration(Generation):
    def __init__(
        self,
        owner: LlamaChatModel,
        messages: list[ChatMessage],
        max_tokens: int | None,
        temperature: float | None,
        grammar: str | None,
    ) -> None:
        self.usage = None
        self._owner = owner
        self._inner = self._run(messages, max_tokens, temperature, grammar)
        self._t_call = self._t_locked = time.perf_counter()
        self._inside = 0.0  # seconds the consumer spent in this generation's steps (lock wait excluded)
        self._locked = False
        self._finished = False

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        if not self._locked:  # the lock is taken here, by the consumer: the compute thread never waits on it
            self._t_call = time.perf_counter()
            self._owner.lock.acquire()
            self._locked = True
            self._t_locked = time.perf_counter()
        t0 = time.perf_counter()
        try:
            piece = self._owner.compute(lambda: next(self._inner))
        except BaseException:
            self._inside += time.perf_counter() - t0
            self._finish()
            raise
        self._inside += time.perf_counter() - t0
        return str(piece)

    def close(self) -> None:
        if self._finished:
            return
        t0 = time.perf_counter()
        try:
            if self._locked:
                self._owner.compute(self._inner.close)
            else:  # never started: nothing ran, nothing to measure but the (zero) usage
                self._inner.close()
        finally:
            self._inside += time.perf_counter() - t0
            self._finish()

    def _finish(self) -> None:
        self._finished = True
        if self._locked:
            self._locked = False
            self._owner.lock.release()
            # The model was this request's from the first step to the last, hand-overs to and from the
            # compute thread included: what the generator measured on that thread misses the hand-overs,
            # so the difference counts as decode time (time the consumer holds a piece stays out).
            usage = self.usage
            if usage is not None:
                extra = self._inside - usage.prefill_s - usage.decode_s
                if extra > 0:
                    self.usage = dataclasses.replace(usage, decode_s=usage.decode_s + extra)

    def __del__(self) -> None:  # an abandoned generation must not keep the model locked
        if self._locked:
            self.close()

    def _run(
        self,
        messages: list[ChatMessage],
        max_tokens: int | None,
        temperature: float | None,
        grammar: str | None,
    ) -> Generator[str, None, None]:
        owner, s = self._owner, self._owner.settings
        llm = owner.llama
        # the consumer holds owner.lock while this generator runs (see __next__); the hand-over of this first
        # step to the compute thread counts towards prefill, not towards waiting for the model
        t_acq = self._t_locked
        queue_wait = t_acq - self._t_call
        # the same instants on the wall clock (Usage.sent_at / first_token_at / ended_at)
        wall_acq = time.time() - (time.perf_counter() - t_acq)
        wall_first: float | None = None
        prefill = decode = 0.0
        n_prompt = n_out = cached = 0
        finish = "length"
        first, segment = True, t_acq
        try:
            tokens = owner.tokenize_prompt(messages)
            n_prompt = len(tokens)
            room = owner.n_ctx - n_prompt
            if room < 1:
                raise ContextOverflowError(f"prompt of {n_prompt} tokens does not fit the context of {owner.n_ctx}")
            limit = min(max_tokens or s.max_tokens, room)
            owner.adapt_threads(force=True)
            cached = owner._reuse_prefix(tokens)
            llm.set_seed(s.seed)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            sampler = llm.generate(
                tokens,
                top_k=s.top_k,
                top_p=s.top_p,
                min_p=s.min_p,
                temp=s.temperature if temperature is None else temperature,
                repeat_penalty=s.repeat_penalty,
                grammar=owner._grammar(grammar) if grammar else None,
            )
            for token in sampler:
                now = time.perf_counter()
                if first:
                    prefill, segment, first = now - t_acq, now, False
                    wall_first = time.time()
                if loader.is_end_of_generation(llm, token):
                    finish = "stop"
                    break
                owner.adapt_threads()  # for the next step
                n_out += 1
                piece = decoder.decode(loader.token_bytes(llm, token))
                if n_out >= limit:
                    decode += time.perf_counter() - segment
                    segment = time.perf_counter()
                    if piece:
                        yield piece
                    break
                if piece:
                    decode += time.perf_counter() - segment
                    yield piece  # time the consumer holds the piece is not compute time
                    segment = time.perf_counter()
            if not first:
                decode += time.perf_counter() - segment
            else:  # the sampler yielded nothing at all
                prefill = time.perf_counter() - t_acq
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        except GeneratorExit:
            finish = "cancelled"
            if not first:
                decode += time.perf_counter() - segment
            raise
        except ContextOverflowError:
            finish = "error"
            raise
        except Exception as exc:
            finish = "error"
            raise GenerationError(f"generation failed: {exc}") from exc
        finally:
            self.usage = Usage(
                prompt_tokens=n_prompt,
                completion_tokens=n_out,
                queue_wait_s=queue_wait,
                prefill_s=prefill,
                decode_s=decode,
                model_id=owner.model_id,
                device=owner.device,
                cached_tokens=cached,
                finish_reason=finish,
                engine="inprocess",
                replica=owner.replica,
                sent_at=wall_acq,
                first_token_at=wall_first,
                ended_at=time.time(),
            )
