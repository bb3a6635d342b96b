"""The ``mlhub`` console script: assembles the command groups and turns errors into one clear line."""

from __future__ import annotations

import sys
import traceback

import typer

try:  # typer >= 0.26 vendors click; older typers use click itself
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, NoArgsIsHelpError

from mlhub.cli import cluster_cmds, db, demo, follow, hpo, jobs, models, ops, runs, scaffold, serving, tenants
from mlhub.cli import monitoring as monitoring_cmds
from mlhub.cli import ui as ui_cmd
from mlhub.cli.ab import app as ab_app
from mlhub.cli.context import STATE
from mlhub.config import Settings
from mlhub.errors import MlhubError, redact

app = typer.Typer(
    name="mlhub",
    help="mlhub: durable ML job queues, training, HPO, registry, serving and monitoring on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for _name, _fn in [("start", cluster_cmds.start), ("stop", cluster_cmds.stop), ("train", jobs.train),
                   ("evaluate", jobs.evaluate), ("predict", jobs.predict), ("tune", jobs.tune),
                   ("diagnose", jobs.diagnose), ("status", jobs.status), ("watch", follow.watch),
                   ("logs", follow.logs), ("cancel", jobs.cancel), ("clean", jobs.clean), ("jobs", jobs.jobs),
                   ("list-models", jobs.list_models), ("deploy", serving.deploy), ("undeploy", serving.undeploy),
                   ("endpoints", serving.endpoints)]:
    app.command(_name)(_fn)
app.add_typer(db.app, name="db")
app.add_typer(tenants.tenants_app, name="tenants")
app.add_typer(tenants.keys_app, name="keys")
app.add_typer(ops.audit_app, name="audit")
app.add_typer(hpo.app, name="hpo")
app.add_typer(runs.app, name="runs")
app.add_typer(models.app, name="models")
app.add_typer(ab_app, name="ab")
app.add_typer(scaffold.app, name="scaffold")
app.add_typer(monitoring_cmds.drift_app, name="drift")
app.add_typer(monitoring_cmds.alerts_app, name="alerts")
app.command("health")(ops.health)
app.command("demo")(demo.demo)
app.command("ui")(ui_cmd.ui)


@app.callback()
def _global(
    api_key: str | None = typer.Option(
        None, "--api-key", envvar=None, help="Tenant API key (default: MLHUB_API_KEY, then MLHUB_HOME/credentials)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster for start/stop (default: MLHUB_RAY_ADDRESS, else a local head)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    STATE.api_key = api_key
    STATE.address = address
    STATE.debug = debug


def _fail(message: str, code: int) -> int:
    print(f"error: {redact(message)}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    """Run the CLI and return its exit status (never raises). ``settings`` replaces the environment's (the demo
    runs its commands against its own throw-away home this way)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    STATE.reset()  # each invocation acts with its own settings and key, also when called in-process
    STATE._settings = settings
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=args, prog_name="mlhub", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return _fail("aborted", 130)
    except NoArgsIsHelpError as exc:  # `mlhub` or `mlhub db` alone: the help is the answer
        print(exc.format_message())
        return 0
    except ClickException as exc:  # usage errors: unknown command, bad option, missing argument, bad value
        return _fail(exc.format_message(), getattr(exc, "exit_code", 2))
    except MlhubError as exc:
        if debug:
            traceback.print_exc()
        return _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the last boundary: one line, traceback with --debug
        if debug:
            traceback.print_exc()
        return _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)", 1)
    finally:
        STATE.close()


def run() -> None:
    sys.exit(main())
