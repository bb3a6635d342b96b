"""`mlhub db upgrade|current|downgrade` work from a built wheel, not only from the checkout.

The wheel is built from this repository, unzipped (what an installer lays down), and put first on
PYTHONPATH of a fresh interpreter whose cwd is an unrelated folder. The venv still has mlhub installed in
editable mode, but its finder sits after the path finder on ``sys.meta_path``, so PYTHONPATH wins; the
test asserts that every mlhub/migrations module came from the unzipped wheel rather than assuming it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    pip = Path(sys.executable).parent / "pip"
    cmd = [str(pip), "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    built = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(out.glob("mlhub-*.whl"))
    assert len(wheels) == 1, wheels
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(site)
    return site


def _python(code: str, site: Path, cwd: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_") and k != "PYTHONPATH"}
    env.update(env_extra, PYTHONPATH=str(site))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=False, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )


def test_the_wheel_ships_the_migrations(unpacked_wheel):
    versions = unpacked_wheel / "migrations" / "versions"
    assert (unpacked_wheel / "migrations" / "env.py").is_file()
    assert (unpacked_wheel / "migrations" / "script.py.mako").is_file()
    assert list(versions.glob("0001_*.py"))
    assert (unpacked_wheel / "mlhub" / "cli" / "main.py").is_file()


def test_the_wheel_ships_the_web_consoles_templates_and_static_files(unpacked_wheel):
    ui = unpacked_wheel / "serve_apps" / "ui"
    for name in ("templates/base.html", "templates/login.html", "templates/model.html", "static/app.js",
                 "static/app.css"):
        assert (ui / name).is_file(), name


def test_imports_come_from_the_unpacked_wheel_not_the_checkout(unpacked_wheel, tmp_path):
    p = _python(
        """
        import json, migrations, mlhub
        from mlhub.store.migrate import migrations_dir
        print(json.dumps({"migrations": migrations.__file__, "mlhub": mlhub.__file__,
                          "dir": str(migrations_dir())}))
        """,
        unpacked_wheel, tmp_path, {},
    )
    assert p.returncode == 0, p.stderr
    paths = json.loads(p.stdout)
    for where in paths.values():
        assert Path(where).resolve().is_relative_to(unpacked_wheel.resolve()), paths
        assert not Path(where).resolve().is_relative_to(REPO), paths


def test_db_upgrade_current_and_downgrade_from_the_installed_package(unpacked_wheel, tmp_path):
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    db_file = tmp_path / "installed.db"
    code = """
        import io, json, sys
        from contextlib import redirect_stdout
        from pathlib import Path

        opened = []  # every migrations source file read (Alembic loads env.py and revisions by path)

        def watch(event, args):
            if event == "open" and isinstance(args[0], str) and "migrations" in args[0] and args[0].endswith(".py"):
                opened.append(args[0])

        sys.addaudithook(watch)
        from mlhub.cli.main import main

        def cli(*args):
            buf = io.StringIO()
            with redirect_stdout(buf):
                rc = main(list(args))
            return rc, buf.getvalue()

        steps = {}
        steps["before"] = cli("db", "current", "--json")
        steps["upgrade"] = cli("db", "upgrade")
        steps["after"] = cli("db", "current", "--json")
        steps["downgrade"] = cli("db", "downgrade", "base", "--yes")
        steps["down"] = cli("db", "current", "--json")
        steps["again"] = cli("db", "upgrade")
        steps["final"] = cli("db", "current", "--json")

        site = Path(sys.argv[1]).resolve()
        from mlhub.store.migrate import migrations_dir

        ours = {
            name: Path(mod.__file__).resolve() for name, mod in list(sys.modules.items())
            if getattr(mod, "__file__", None)
            and (name.split(".")[0] in {"mlhub", "migrations"} or "/migrations/" in mod.__file__)
        }
        outside = sorted(name for name, path in ours.items() if not path.is_relative_to(site))
        alembic_loaded = sorted({str(Path(p).resolve()) for p in opened})
        print(json.dumps({"steps": steps, "outside": outside, "alembic_loaded": alembic_loaded,
                          "script_location": str(migrations_dir())}))
        """
    code = code.replace("sys.argv[1]", repr(str(unpacked_wheel)))
    env = {"MLHUB_HOME": str(tmp_path / "home"), "MLHUB_DATABASE_URL": f"sqlite:///{db_file}"}

    p = _python(code, unpacked_wheel, workdir, env)

    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    steps = {k: (rc, out) for k, (rc, out) in result["steps"].items()}
    assert all(rc == 0 for rc, _ in steps.values()), (steps, p.stderr)
    before, after, down, final = (json.loads(steps[k][1]) for k in ("before", "after", "down", "final"))
    assert before["current"] is None and before["up_to_date"] is False
    assert after["current"] == after["head"] and after["up_to_date"] is True
    assert down["current"] is None
    assert final["current"] == final["head"] == after["head"]
    assert f"empty -> {after['head']}" in steps["upgrade"][1]
    assert str(db_file) in after["database"]
    # nothing of mlhub or its migrations (env.py and versions, loaded by Alembic) came from the checkout
    assert result["outside"] == []
    loaded = [Path(p) for p in result["alembic_loaded"]]
    assert {p.name for p in loaded} >= {"env.py"}
    assert any(p.parent.name == "versions" for p in loaded), loaded
    assert all(p.is_relative_to(unpacked_wheel.resolve()) for p in loaded), loaded
    assert Path(result["script_location"]).is_relative_to(unpacked_wheel.resolve())
    assert db_file.exists()
