"""README.md's tutorial runs as written: the shell blocks marked `<!-- runnable -->` are run in order, as one
bash script with `set -e`, in a fresh folder with a fresh MLHUB_HOME (the embedded defaults), the way a new user
pastes them after `make demo`. The two set-up commands at the top (`make demo`, `make test`) are what CI runs
anyway and are not marked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.ray
README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- runnable -->\n```(?:sh|bash)\n(.*?)```", re.S)


def runnable_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def test_the_readme_marks_its_tutorial_runnable():
    blocks = runnable_blocks(README.read_text())
    assert len(blocks) >= 4
    script = "\n".join(blocks)
    for command in ("mlhub start", "mlhub train", "mlhub deploy", "curl", "mlhub stop"):
        assert command in script
    # a marked block that is not a shell block would be skipped silently: refuse it
    assert README.read_text().count("<!-- runnable -->") == len(blocks)


def test_the_readme_tutorial_runs_as_written(tmp_path):
    script = "set -euo pipefail\n" + "\n".join(runnable_blocks(README.read_text()))
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))  # `. .venv/bin/activate` as after `make demo`
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_") or k.startswith("MLHUB_TEST_")}
    env.update(MLHUB_HOME=str(tmp_path / "home"), MLHUB_SERVE_HTTP_PORT=str(free_port()),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
    finally:  # whatever happened, leave no head behind
        subprocess.run([str(Path(sys.executable).parent / "mlhub"), "stop"], cwd=work, env=env,
                       capture_output=True, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert '"model":"wine","version":1' in out.replace(" ", ""), out[-3000:]
    assert (work / "digits.png").read_bytes()[:4] == b"\x89PNG"
    assert "orchestrator: stopped" in out
