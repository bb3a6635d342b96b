"""Capture an attempt's stdout and stderr (Python prints, C extensions, subprocesses) into the store.

File descriptors 1 and 2 are redirected into pipes for the duration of the attempt; reader threads tee
every byte to the original descriptors (so Ray's own log files still see it) and batch lines into
``job_logs`` every half second. Stored logs outlive the Ray cluster: ``mlhub logs`` reads the database.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("mlhub.jobs")

FLUSH_INTERVAL_S = 0.5
MAX_CHUNK_CHARS = 64_000


class OutputCapture:
    """Context manager. ``sink(chunks)`` receives ``[(stream, seq, text), ...]`` every half second while the
    attempt runs and must persist them; what is left at exit is returned by :meth:`take_pending`."""

    def __init__(self, sink: Callable[[list[tuple[str, int, str]]], None]) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int, str]] = []
        self._seq = {"stdout": 0, "stderr": 0}
        self._threads: list[threading.Thread] = []
        self._saved: dict[int, int] = {}
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def __enter__(self) -> OutputCapture:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            saved = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            self._saved[fd] = saved
            t = threading.Thread(target=self._pump, args=(read_end, saved, stream), daemon=True,
                                 name=f"mlhub-capture-{stream}")
            t.start()
            self._threads.append(t)
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True, name="mlhub-capture-flush")
        self._flusher.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # closes our pipe's write end on fd: the reader sees EOF
        for t in self._threads:
            t.join(timeout=5)
        for saved in self._saved.values():
            os.close(saved)
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)

    def take_pending(self) -> list[tuple[str, int, str]]:
        """The chunks not yet stored, for the caller to persist (the runner hands them to the orchestrator
        with the outcome, which writes them in its batched completion: no extra round trip per job)."""
        with self._lock:
            chunks, self._pending = self._pending, []
        return chunks

    def _pump(self, read_end: int, tee_fd: int, stream: str) -> None:
        buf = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while True:
                data = pipe.read(65536)
                if not data:
                    break
                try:
                    os.write(tee_fd, data)
                except OSError:
                    pass
                buf += data
                if b"\n" in buf:
                    complete, _, buf = buf.rpartition(b"\n")
                    self._add(stream, complete.decode("utf-8", "replace") + "\n")
        if buf:
            self._add(stream, buf.decode("utf-8", "replace"))

    def _add(self, stream: str, text: str) -> None:
        with self._lock:
            for i in range(0, len(text), MAX_CHUNK_CHARS):
                self._seq[stream] += 1
                self._pending.append((stream, self._seq[stream], text[i:i + MAX_CHUNK_CHARS]))

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            chunks, self._pending = self._pending, []
        if not chunks:
            return
        for attempt in range(3):
            try:
                self._sink(chunks)
                return
            except Exception as exc:  # noqa: BLE001 - losing a log line must never fail the job
                if attempt == 2:
                    log.warning("could not store %d log chunks: %s", len(chunks), exc)
                time.sleep(0.2 * (attempt + 1))
