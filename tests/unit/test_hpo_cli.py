"""``mlhub hpo trials|plot`` on trials written to the store the way the HPO driver writes them (no Ray)."""

from __future__ import annotations

import json

import pytest

from mlhub.cli.main import main
from mlhub.hpo.trials import TrialUpdate, list_trials, trial_curves, write_trials
from mlhub.store.runs import MetricPoint

SPEC = {"name": "search", "metric": "val_loss", "mode": "min",
        "trainer": {"name": "t", "framework": "baseline", "model": "logistic", "epochs": 6,
                    "dataset": {"source": "synthetic", "task": "classification"}},
        "search_space": {"lr": {"type": "loguniform", "low": 0.001, "high": 1.0},
                         "l2": {"type": "choice", "values": [0.0, 0.01]}}}


@pytest.fixture
def search(mlhub_home):
    """An HPO job with 4 trials: two ran 6 epochs, one was stopped after 2, one is still running."""
    from mlhub.client import Hub

    hub = Hub()
    job = hub.tune(SPEC)
    curves = {"a_00000": (0.1, 0.0, [0.69, 0.6, 0.55, 0.5, 0.47, 0.45]),
              "a_00001": (0.5, 0.01, [0.69, 0.5, 0.42, 0.38, 0.36, 0.35]),
              "a_00002": (0.002, 0.0, [0.69, 0.68]), "a_00003": (0.03, 0.01, [0.69, 0.65, 0.6])}
    status = {"a_00000": "terminated", "a_00001": "terminated", "a_00002": "stopped", "a_00003": "running"}
    updates = [TrialUpdate(tid, status[tid], {"lr": lr, "l2": l2}, {"val_loss": vals[-1], "loss": vals[-1] + 0.1},
                           len(vals), [MetricPoint("val_loss", v, i) for i, v in enumerate(vals)])
               for tid, (lr, l2, vals) in curves.items()]
    write_trials(hub.backends.db, hub.principal.tenant_id, job.id, 1, "search", updates)
    # a later write of the running trial: one more epoch, same run
    more = TrialUpdate("a_00003", "running", {"lr": 0.03, "l2": 0.01}, {"val_loss": 0.58}, 4,
                       [MetricPoint("val_loss", 0.58, 3)], run_id=updates[3].run_id)
    write_trials(hub.backends.db, hub.principal.tenant_id, job.id, 1, "search", [more])
    yield hub, job.id
    hub.close()


def test_trials_are_stored_with_a_run_each_and_curves_per_epoch(search):
    hub, job_id = search
    trials = list_trials(hub.backends.db, hub.principal.tenant_id, job_id)
    assert [t.trial_id for t in trials] == ["a_00000", "a_00001", "a_00002", "a_00003"]
    assert len({t.run_id for t in trials}) == 4 and trials[3].iterations == 4 and trials[2].status == "stopped"
    curves = trial_curves(hub.backends.db, hub.principal.tenant_id, job_id, "val_loss")
    assert curves["a_00003"] == [(1, 0.69), (2, 0.65), (3, 0.6), (4, 0.58)] and len(curves["a_00001"]) == 6
    assert [t.trial_id for t in hub.trials(job_id)] == [t.trial_id for t in trials]


def test_trials_json_and_table(search, capsys):
    _, job_id = search
    assert main(["hpo", "trials", str(job_id), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metric"] == "val_loss" and doc["state"] == "queued"
    assert {t["trial_id"]: t["status"] for t in doc["trials"]}["a_00002"] == "stopped"
    assert main(["hpo", "trials", str(job_id)]) == 0
    out = capsys.readouterr().out
    assert "a_00001*" in out and "lr=0.5" in out  # the best (lowest val_loss) is marked


def test_plot_writes_a_png_with_curves_and_param_panels(search, tmp_path, capsys):
    _, job_id = search
    out = tmp_path / "trials.png"
    assert main(["hpo", "plot", str(job_id), "--out", str(out)]) == 0, capsys.readouterr().err
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(str(out)).shape
    assert width >= 3 * 500 and height >= 350  # three panels: curves, lr vs score, l2 vs score
    assert str(out) in capsys.readouterr().out


def test_plot_of_a_job_that_is_not_a_search_is_refused(search, tmp_path, capsys):
    hub, _ = search
    other = hub.submit({"kind": "diagnostic", "name": "d"})
    assert main(["hpo", "plot", str(other.id), "--out", str(tmp_path / "x.png")]) != 0
    assert "not an HPO search" in capsys.readouterr().err
    assert main(["hpo", "trials", "9999"]) != 0
    assert "job 9999 not found" in capsys.readouterr().err


def test_the_live_table_of_a_queued_search_says_why_it_waits():
    from rich.console import Console

    from mlhub.cli.hpo import trials_table
    from mlhub.hpo.trials import SearchInfo

    def caption(state: str, progress: dict | None) -> str:
        out = Console(width=300, record=True)
        out.print(trials_table(SearchInfo(3, "s", state, "val_loss", "min", (), progress), []))
        return " ".join(out.export_text().split())  # the caption wraps at the table's width

    note = "waiting for resources: needs 1 CPUs"
    assert f"job 3 s: queued; {note}" in caption("queued", {"waiting": note})
    assert note not in caption("running", {"waiting": note})  # a stale note is never shown once it runs
    assert "1/4 trials done, 2 running" in caption("running", {"trials": 4, "done": 1, "running": 2})
