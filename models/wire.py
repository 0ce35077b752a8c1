"""Framed messages between the web process and its model worker: a 4-byte length, then a pickle.

Both ends are our own code (the worker is started by the web process from the same installation), so
pickle is safe here and carries our frozen dataclasses (ChatMessage, Usage) as they are. A message is a
tuple `(kind, request_id, payload)`; request id 0 is the worker itself (config, ready, load_failed).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import threading
from typing import Any, BinaryIO

HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024  # a frame larger than this is a corrupt stream, not a message

Message = tuple[str, int, Any]


class Channel:
    """One direction-pair of pipes: `send` from any thread (serialised), `recv` from one reader thread."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader: BinaryIO = os.fdopen(read_fd, "rb", buffering=1 << 16)
        self._write_fd = write_fd
        self._write_lock = threading.Lock()
        self._closed = False

    def send(self, kind: str, request_id: int = 0, payload: Any = None) -> None:
        """Write one message; raises BrokenPipeError / OSError when the other end is gone."""
        data = pickle.dumps((kind, request_id, payload), protocol=pickle.HIGHEST_PROTOCOL)
        frame = HEADER.pack(len(data)) + data
        with self._write_lock:
            view = memoryview(frame)
            while view:
                written = os.write(self._write_fd, view)
                view = view[written:]

    def recv(self) -> Message | None:
        """The next message, or None at end of stream (the other process closed its end or died)."""
        header = self._reader.read(HEADER.size)
        if len(header) < HEADER.size:
            return None
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ValueError(f"model worker stream is corrupt (frame of {size} bytes)")
        data = self._reader.read(size)
        if len(data) < size:
            return None
        message = pickle.loads(data)
        if not (isinstance(message, tuple) and len(message) == 3):
            raise ValueError("model worker stream is corrupt (not a message)")
        return message  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close both ends (a blocked `recv` in another thread then sees end of stream)."""
        if self._closed:
            return
        self._closed = True
        for close in (lambda: os.close(self._write_fd), self._reader.close):
            with contextlib.suppress(OSError):
                close()
