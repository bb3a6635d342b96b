"""The one run of the demo in the suite: `mlhub demo` as a user runs it, on the embedded defaults."""

import subprocess
import sys
from pathlib import Path


def test_the_demo_runs_end_to_end_and_writes_its_plot(tmp_path):
    mlhub = Path(sys.executable).parent / "mlhub"
    out = tmp_path / "plots"
    proc = subprocess.run(
        [str(mlhub), "demo", "--home", str(tmp_path / "home"), "--output", str(out), "--epochs", "10"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    text = proc.stdout
    for step in ("schema created", "tenants acme and globex", "backend health", "epochs tracked",
                 "verified on read", "not found (tenants never see each other)", "corrupted blob is refused",
                 "1 load from the store", "audit log of acme"):
        assert step in text, f"demo output lacks {step!r}"
    png = out / "loss_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
