"""The one run of the demo in the suite: `mlhub demo --keep` as a user runs it, on the embedded defaults. While
the tour keeps its endpoint up, the test calls it with the key and URL the tour printed, then stops it with
Ctrl-C (SIGINT) as a user would. It runs without the TensorFlow job (--no-tensorflow): the same 2-worker
TensorFlow job is tested end to end in tests/integration/test_tf_ray.py, and 40 s of the suite are saved."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.ray

STEPS = (
    "schema created", "backend health", "orchestrator are up", "submitted 6 jobs",
    "digits-cnn (torch DDP x2)", "iris-search (ASHA)", "trials 8/8",
    "evaluation of wine-forest/1", "batch prediction scored 178 rows", "took 178 of 178 rows from the prediction cache",
    "registered models", "promoted wine-forest/1 to champion: 2 gates passed", "promotion to production refused",
    "is refused: row 0, column", "flaky took 2 attempts", "fails attempt 1 of the first 1 on purpose",
    "$ mlhub deploy wine-forest --alias champion", "answers [0, 0, 0] for 3 rows (version 1)",
    "$ mlhub ab status wine-ab", "two-proportion z-test", "winner: control",
    "$ mlhub drift check wine-drift", "DRIFTED: alcohol, color_intensity", "ALERT 1 [critical] rule wine-drifted",
    "not found (tenants never see each other)", "corrupted blob is refused", "audit log", "summary",
)
PLOTS = ("loss_curve.png", "torch_ddp_curves.png", "hpo_trials.png", "confusion_matrix.png", "drift.png")


def test_the_demo_tours_everything_and_keeps_its_endpoint_up_until_ctrl_c(tmp_path):
    mlhub = Path(sys.executable).parent / "mlhub"
    out = tmp_path / "plots"
    proc = subprocess.Popen(
        [str(mlhub), "demo", "--home", str(tmp_path / "home"), "--output", str(out), "--epochs", "10", "--keep",
         "--no-tensorflow"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("press Ctrl-C"):
                break
        text = "".join(lines)
        assert lines and lines[-1].startswith("press Ctrl-C"), text[-6000:]
        curl = re.search(r"Bearer (mlh_\S+)' -d '(.+)' (http://\S+)", text.rsplit("the endpoint stays up", 1)[-1])
        assert curl, text[-2000:]
        key, body, url = curl.groups()
        r = requests.post(url, data=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200 and r.json()["model"] == "wine-forest" and r.json()["version"] == 1, r.text
        assert requests.post(url, data=body, timeout=30).status_code == 401  # the key is needed
        console = re.search(r"web console: (http://\S+/ui/)", text)  # the summary's last words: the console
        assert console, text[-2000:]
        page = requests.get(console.group(1), timeout=30)  # no session: its login page
        assert page.status_code == 200 and 'name="api_key"' in page.text, page.text[:500]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text += rest
    assert proc.returncode == 0, text[-6000:]
    assert "stopping" in rest
    for step in STEPS:
        assert step in text, f"demo output lacks {step!r}"
    assert "cancelled" in text and "digits-logit" in text
    for name in PLOTS:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000, name
        assert str(png) in text  # the tour prints where each plot is
    with pytest.raises(requests.ConnectionError):  # the endpoint went away with the tour
        requests.post(url, data=body, headers={"Authorization": f"Bearer {key}"}, timeout=5)
