"""`mlhub scaffold trainer`: files written, refusals, and each framework's module trained for 2 epochs under a
LocalSession into a payload the registry's loader reads (tensorflow only where it is installed). No Ray."""

from __future__ import annotations

import importlib.util
import sys
import uuid

import pytest

from mlhub.cli.main import main


def run(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _unique(prefix: str) -> str:  # module names are process-wide: never reuse one across tests
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_scaffold_writes_the_module_and_spec_and_prints_next_steps(capsys, tmp_path):
    from mlhub.domain.specs import load_spec_file
    from mlhub.jobs.service import validate_for_submit

    name = _unique("trainer")
    rc, out, err = run(capsys, "scaffold", "trainer", name, "--framework", "torch", "--dir", str(tmp_path / "proj"))
    assert rc == 0, err
    module, spec_file = tmp_path / "proj" / f"{name}.py", tmp_path / "proj" / f"{name}.yaml"
    assert module.is_file() and spec_file.is_file()
    assert "TRAINER_NAME" not in module.read_text() and "TRAINER_NAME" not in spec_file.read_text()
    assert f"mlhub train {name}.yaml --wait" in out and "ray job submit --working-dir ." in out
    spec = load_spec_file(spec_file)
    assert (spec.kind, spec.name, spec.framework, spec.entrypoint) == ("training", name, "torch", f"{name}:train_loop")
    validate_for_submit(spec)  # the model and params it names pass submit-time validation
    compile(module.read_text(), str(module), "exec")


def test_scaffold_refuses_to_overwrite_without_force(capsys, tmp_path):
    name = _unique("again")
    assert run(capsys, "scaffold", "trainer", name, "--framework", "sklearn", "--dir", str(tmp_path))[0] == 0
    module = tmp_path / f"{name}.py"
    module.write_text("# my edits\n")
    rc, _, err = run(capsys, "scaffold", "trainer", name, "--framework", "torch", "--dir", str(tmp_path))
    assert rc == 5 and "already exist" in err and "--force" in err
    assert module.read_text() == "# my edits\n"
    rc, _, err = run(capsys, "scaffold", "trainer", name, "--framework", "torch", "--dir", str(tmp_path), "--force")
    assert rc == 0, err
    assert "framework: torch" in (tmp_path / f"{name}.yaml").read_text() and "MLP" in module.read_text()


@pytest.mark.parametrize(("name", "needle"), [
    ("9lives", "must be a Python identifier"),
    ("my-trainer", "must be a Python identifier"),
    ("_private", "must be a Python identifier"),
    ("class", "is a Python keyword"),
    ("json", "would shadow Python's own module json"),
    ("numpy", "would shadow the installed module numpy"),
    ("x" * 65, "must be a Python identifier"),
])
def test_scaffold_refuses_bad_names(capsys, tmp_path, name, needle):
    rc, _, err = run(capsys, "scaffold", "trainer", name, "--framework", "torch", "--dir", str(tmp_path))
    assert rc == 2 and needle in err
    assert list(tmp_path.iterdir()) == []


def test_scaffold_refuses_an_unknown_framework_and_a_file_as_dir(capsys, tmp_path):
    rc, _, err = run(capsys, "scaffold", "trainer", "ok_name", "--framework", "jax", "--dir", str(tmp_path))
    assert rc == 2 and "use one of torch, tensorflow, sklearn" in err
    (tmp_path / "file").write_text("")
    rc, _, err = run(capsys, "scaffold", "trainer", "ok_name", "--framework", "torch", "--dir", str(tmp_path / "file"))
    assert rc == 2 and "is not a directory" in err


FRAMEWORKS = [
    ("torch", "pt"),
    ("sklearn", "skops"),
    pytest.param("tensorflow", "keras", marks=pytest.mark.skipif(
        importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf_keras") is None,
        reason="the tensorflow extra is not installed")),
]


@pytest.mark.parametrize(("framework", "fmt"), FRAMEWORKS)
def test_each_scaffolded_trainer_trains_resumes_and_stores_a_loadable_model(capsys, tmp_path, monkeypatch,
                                                                            framework, fmt):
    from mlhub.domain.specs import load_spec_file
    from mlhub.training.distributed import LocalSession, loop_for
    from mlhub.training.serialization import load_model

    if framework == "tensorflow":
        monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    name = _unique(f"scaf_{framework}")
    assert run(capsys, "scaffold", "trainer", name, "--framework", framework, "--dir", str(tmp_path))[0] == 0
    spec = load_spec_file(tmp_path / f"{name}.yaml").model_copy(update={"epochs": 2})
    try:
        reports = []
        session = LocalSession(spec, [], reports.append)
        loop_for(spec, tmp_path)(session)
        assert [r.epoch for r in reports] == [0, 1]
        assert all("val_accuracy" in r.metrics for r in reports)  # iris: a classification task
        assert session.final is not None and session.final.model_format == fmt
        assert session.final.info["metrics"]["accuracy"] > 0.3 and session.state  # a checkpoint was kept
        model = load_model(framework, fmt, session.final.payload)
        data = session.dataset()
        assert model.task == "classification" and sorted(model.classes) == sorted(data.classes)
        assert model.predict(data.x_test).shape == (len(data.x_test),)

        # a third epoch resumed from the checkpoint after epoch 2
        resumed = LocalSession(spec.model_copy(update={"epochs": 3}), [], reports.append)
        resumed.resume = {"epoch": 2, "files": session.state}
        loop_for(spec, tmp_path)(resumed)
        assert [r.epoch for r in reports[2:]] == [2] and resumed.final is not None
        assert "resumed after epoch 2" in capsys.readouterr().out
    finally:
        sys.modules.pop(name, None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))


def test_the_torch_template_refuses_an_architecture_the_registry_cannot_rebuild(tmp_path):
    """Edit the model away from mlhub's mlp (but keep saving it as one): the job fails with a clear message
    instead of registering a model nobody can load."""
    from mlhub.domain.specs import parse_spec
    from mlhub.errors import ValidationError
    from mlhub.scaffold_templates import render_module
    from mlhub.training.distributed import LocalSession, loop_for

    name = _unique("custom_arch")
    text = render_module("torch", name).replace(
        'return MLP(n_features, n_outputs, hidden=model_params.get("hidden", [64, 64]),',
        'import torch\n    return torch.nn.Sequential(torch.nn.Linear(n_features, n_outputs)); MLP(1, 1, hidden=(1,),')
    assert "torch.nn.Sequential" in text
    (tmp_path / f"{name}.py").write_text(text)
    spec = parse_spec({"kind": "training", "name": name, "framework": "torch", "model": "mlp", "epochs": 1,
                       "entrypoint": f"{name}:train_loop", "dataset": {"source": "sklearn", "name": "iris"}})
    try:
        with pytest.raises(ValidationError, match="cannot be stored as mlhub's 'mlp'"):
            loop_for(spec, tmp_path)(LocalSession(spec, [], lambda r: None))
    finally:
        sys.modules.pop(name, None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
