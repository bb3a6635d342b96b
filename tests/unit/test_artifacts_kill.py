"""A writer killed with SIGKILL mid-upload leaves no visible blob, only a piece that GC removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlhub.artifacts import FilesystemArtifactStore

REPO_ROOT = Path(__file__).resolve().parents[2]

# Streams an endless input into put(); throttled so that the disk does not fill before the kill lands.
WRITER = """
import sys, time
from pathlib import Path
from mlhub.artifacts import FilesystemArtifactStore

def endless():
    block = bytes(64 * 1024)
    while True:
        yield block
        time.sleep(0.005)

FilesystemArtifactStore(Path(sys.argv[1])).put("acme", endless())
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkilled_writer_leaves_only_collectable_pieces(tmp_path):
    root = tmp_path / "artifacts"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 0 for p in (root / "tmp").glob("*.part")):
            assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else "writer exited"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.01)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        if writer.stderr:
            writer.stderr.close()
    assert writer.returncode == -signal.SIGKILL

    store = FilesystemArtifactStore(root)
    assert list(store.list_blobs("acme")) == []
    assert store.collect_garbage(older_than_s=0) >= 1
    assert list((root / "tmp").iterdir()) == []
