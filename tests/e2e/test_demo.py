"""The one run of the demo in the suite: `mlhub demo` as a user runs it, on the embedded defaults."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


def test_the_demo_runs_end_to_end_and_writes_its_plot(tmp_path):
    mlhub = Path(sys.executable).parent / "mlhub"
    out = tmp_path / "plots"
    proc = subprocess.run(
        [str(mlhub), "demo", "--home", str(tmp_path / "home"), "--output", str(out), "--epochs", "10"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    text = proc.stdout
    for step in ("schema created", "backend health", "orchestrator are up", "submitted 4 jobs",
                 "evaluation of wine-forest/1", "batch prediction scored 178 rows", "registered models",
                 "promoted wine-forest/1 to champion: 2 gates passed", "promotion to production refused",
                 "is refused: row 0, column",
                 "flaky took 2 attempts", "fails attempt 1 of the first 1 on purpose",
                 "not found (tenants never see each other)", "corrupted blob is refused", "audit log"):
        assert step in text, f"demo output lacks {step!r}"
    assert "cancelled" in text and "digits-logit" in text
    for name in ("loss_curve.png", "confusion_matrix.png"):
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000, name
