"""``mlhub scaffold trainer NAME --framework torch|tensorflow|sklearn``: a ready-to-edit training module and its
spec (custom training code; see :mod:`mlhub.jobs.code` for how it travels with the job)."""

from __future__ import annotations

from pathlib import Path

import typer

from mlhub.cli.output import console
from mlhub.errors import ConflictError, ValidationError

app = typer.Typer(help="Write starting points for your own code.", no_args_is_help=True)


@app.command("trainer")
def trainer(
    name: str = typer.Argument(..., help="Module and job name: a Python identifier (writes NAME.py, NAME.yaml)."),
    framework: str = typer.Option(..., "--framework", help="torch, tensorflow or sklearn."),
    directory: Path = typer.Option(Path("."), "--dir", help="Folder to write into (created if missing)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write NAME.py (a training loop with data loading, checkpoints, resume and reporting wired) and
    NAME.yaml (a spec that runs it: `mlhub train NAME.yaml --wait`)."""
    from mlhub.scaffold_templates import FRAMEWORKS, render_module, render_spec, trainer_name_problem

    if framework not in FRAMEWORKS:
        raise ValidationError(f"--framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")
    if (problem := trainer_name_problem(name, directory)) is not None:
        raise ValidationError(problem)
    if directory.exists() and not directory.is_dir():
        raise ValidationError(f"--dir {directory} is not a directory")
    files = {directory / f"{name}.py": render_module(framework, name),
             directory / f"{name}.yaml": render_spec(framework, name)}
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise ConflictError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                            "pass --force to overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        console.print(f"wrote {path}")
    where = "" if directory.resolve() == Path.cwd().resolve() else f"cd {directory}\n  "
    extra = "  (needs: pip install 'mlhub[tensorflow]')\n" if framework == "tensorflow" else ""
    console.print(
        f"\nnext steps:\n  edit {name}.py (the model and the training loop) and {name}.yaml (dataset, epochs, params)\n"
        f"  {where}mlhub train {name}.yaml --wait      # packs this folder and sends it with the job\n{extra}"
        f"  on a cluster: ray job submit --working-dir . -- mlhub train {name}.yaml --wait",
        markup=False, highlight=False)
