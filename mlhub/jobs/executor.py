"""The executor lane: a long-lived process runs *batches* of short single-process jobs, one after another.

A Ray task per attempt costs the orchestrator about a millisecond and a half to submit and wait for, and
the attempt's output capture (fd redirection, pipes, threads) another half millisecond: for no-op-sized
jobs that is most of the work. An executor (a Ray actor holding the resource shape of the jobs it serves,
see :mod:`mlhub.jobs.ray_launcher`) receives a batch of claimed jobs in one call and returns their outcomes
in one reply. Each job still runs through :func:`mlhub.jobs.runner.execute`: same handlers, same outcome
documents, logs stored per job and attempt, effects idempotent on (job id, attempt).

Output capture is set up once per process (:class:`ProcessCapture`): file descriptors 1 and 2 stay
redirected into pipes, and whatever is read from them goes to the attempt that is current at the time.
Python-level output (``print``, tracebacks) goes straight to the current attempt through ``sys.stdout`` /
``sys.stderr`` swapped per attempt, which costs next to nothing. At the end of an attempt the pipes are
drained under the same lock the reader uses, so bytes written during the attempt are never attributed to
the next one.

Nothing here imports Ray: the lane's logic is tested without it.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mlhub.jobs")

FLUSH_INTERVAL_S = 0.5
MAX_CHUNK_CHARS = 64_000
STREAMS = ("stdout", "stderr")

Sink = Callable[[list[tuple[str, int, str]]], None]


class _AttemptOutput:
    """The captured output of one attempt: text pieces per stream, cut into ``(stream, seq, text)`` chunks of
    complete lines (the last, partial line only at the end), numbered per stream like :class:`OutputCapture`."""

    def __init__(self, sink: Sink, tee: dict[str, int]) -> None:
        self.sink = sink
        self._tee = tee
        self._parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._seq = {"stdout": 0, "stderr": 0}
        self._lock = threading.Lock()
        #: held while chunks are being stored, so the final take waits for a flush in progress (log order)
        self.flushing = threading.Lock()

    def add(self, stream: str, text: str) -> None:
        with self._lock:
            self._parts[stream].append(text)

    def take(self, *, final: bool) -> list[tuple[str, int, str]]:
        chunks: list[tuple[str, int, str]] = []
        with self._lock:
            for stream in STREAMS:
                parts = self._parts[stream]
                if not parts:
                    continue
                text = "".join(parts)
                if final:
                    parts.clear()
                else:
                    text, nl, rest = text.rpartition("\n")
                    if not nl:
                        parts[:] = [rest]
                        continue
                    text += "\n"
                    parts[:] = [rest] if rest else []
                for i in range(0, len(text), MAX_CHUNK_CHARS):
                    self._seq[stream] += 1
                    chunks.append((stream, self._seq[stream], text[i:i + MAX_CHUNK_CHARS]))
        for stream, _, text in chunks:  # tee: Ray's own log files of the process still see every line
            try:
                os.write(self._tee[stream], text.encode("utf-8", "replace"))
            except OSError:
                pass
        return chunks


class _Stream:
    """``sys.stdout`` / ``sys.stderr`` while an attempt runs: text goes to that attempt."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, out: _AttemptOutput, stream: str, fd: int) -> None:
        self._out = out
        self._stream = stream
        self._fd = fd

    def write(self, text: str) -> int:
        self._out.add(self._stream, text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd  # code that writes to the descriptor itself goes through the pipe: still captured

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


class ProcessCapture:
    """fd 1 and 2 redirected once for the life of the process; :meth:`attempt` routes output to one attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: _AttemptOutput | None = None
        self._tee: dict[str, int] = {}
        self._reads: dict[int, str] = {}
        self._buf: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            self._tee[stream] = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self._reads[read_end] = stream
        threading.Thread(target=self._pump, daemon=True, name="mlhub-executor-capture").start()
        threading.Thread(target=self._flush_loop, daemon=True, name="mlhub-executor-flush").start()

    def attempt(self, sink: Sink) -> _Attempt:
        return _Attempt(self, sink)

    # --- the reader: bytes from the descriptors, attributed under the lock ---------------------------------

    def _pump(self) -> None:
        # this thread must never die: every later write to fd 1 or 2 of the process would block on a full pipe
        fds = list(self._reads)
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
                with self._lock:
                    for fd in ready:
                        self._drain_fd(fd)
            except InterruptedError:
                continue
            except Exception:  # noqa: BLE001
                log.exception("output capture: reading the process's output failed; carrying on")
                time.sleep(0.01)

    def _drain(self) -> None:
        """Everything written to the descriptors so far, to the current attempt (caller holds the lock)."""
        for fd in self._reads:
            self._drain_fd(fd)

    def _drain_fd(self, fd: int) -> None:
        stream = self._reads[fd]
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            out = self._current
            if out is None:  # between attempts (Ray's own output): only to the original descriptor
                try:
                    os.write(self._tee[stream], data)
                except OSError:
                    pass
                continue
            buf = self._buf[stream] + data
            complete, nl, self._buf[stream] = buf.rpartition(b"\n")
            if nl:
                out.add(stream, complete.decode("utf-8", "replace") + "\n")

    def _flush_loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            try:
                with self._lock:
                    self._drain()
                    out = self._current
                if out is not None:
                    with out.flushing:
                        _store(out.sink, out.take(final=False))
            except Exception:  # noqa: BLE001 - a running job's logs are stored at its end anyway
                log.exception("output capture: storing a running job's output failed; carrying on")

    # --- one attempt ----------------------------------------------------------------------------------------

    def _begin(self, out: _AttemptOutput) -> None:
        with self._lock:
            self._drain()  # what came before belongs to nobody
            self._flush_partial(None)
            self._current = out

    def _end(self, out: _AttemptOutput) -> None:
        with self._lock:
            self._drain()
            self._flush_partial(out)
            self._current = None

    def _flush_partial(self, out: _AttemptOutput | None) -> None:
        for stream in STREAMS:
            rest, self._buf[stream] = self._buf[stream], b""
            if rest and out is not None:
                out.add(stream, rest.decode("utf-8", "replace"))


class _Attempt:
    """Context manager, the same shape as :class:`mlhub.jobs.capture.OutputCapture`."""

    def __init__(self, capture: ProcessCapture, sink: Sink) -> None:
        self._capture = capture
        self._out = _AttemptOutput(sink, capture._tee)
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> _Attempt:
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except (OSError, ValueError):
                pass
        self._capture._begin(self._out)
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Stream(self._out, "stdout", 1)
        sys.stderr = _Stream(self._out, "stderr", 2)
        return self

    def __exit__(self, *exc) -> None:
        assert self._saved is not None
        sys.stdout, sys.stderr = self._saved
        for s in self._saved:  # a logging handler may hold the original streams: their buffers go to the pipe
            try:
                s.flush()
            except (OSError, ValueError):
                pass
        self._capture._end(self._out)

    def take_pending(self) -> list[tuple[str, int, str]]:
        with self._out.flushing:
            return self._out.take(final=True)


def _store(sink: Sink, chunks: list[tuple[str, int, str]]) -> None:
    if not chunks:
        return
    for attempt in range(3):
        try:
            sink(chunks)
            return
        except Exception as exc:  # noqa: BLE001 - losing a log line must never fail the job
            if attempt == 2:
                log.warning("could not store %d log chunks: %s", len(chunks), exc)
            time.sleep(0.2 * (attempt + 1))


_CAPTURE: ProcessCapture | None = None


def process_capture() -> ProcessCapture:
    global _CAPTURE
    if _CAPTURE is None:
        _CAPTURE = ProcessCapture()
    return _CAPTURE


def run_batch(settings_doc: dict[str, Any], jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``jobs`` (claimed jobs as dicts) one after another in this process; their outcomes, in order."""
    from mlhub.jobs.runner import backends_for, execute

    backends = backends_for(settings_doc)
    capture = process_capture()
    return [execute(settings_doc, job, output=capture, backends=backends) for job in jobs]


__all__ = ["ProcessCapture", "process_capture", "run_batch"]
