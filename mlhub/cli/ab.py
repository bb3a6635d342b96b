"""``mlhub ab ...``: A/B, canary and shadow experiments between versions of one model, as the calling tenant
(reads and writes the store; works while Ray is down). The inference server routes a model's traffic by its
running experiment; ``status`` evaluates a running canary too, so it is always current."""

from __future__ import annotations

from typing import Any

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, print_json, print_table, to_plain
from mlhub.errors import ValidationError

app = typer.Typer(help="A/B, canary and shadow experiments: create, start, stop, status, promote.",
                  no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Print JSON.")
EXP_ARG = typer.Argument(..., metavar="EXPERIMENT", help="An experiment's name or id.")


def _service():
    from mlhub.experiments.service import ExperimentService
    from mlhub.registry.service import RegistryService

    backends = STATE.backends
    registry = RegistryService(backends.db, cache=backends.cache, cache_ttl_s=STATE.settings.cache_ttl_s)
    return ExperimentService(backends.db, registry.audit, registry=registry)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValidationError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _info_line(info) -> str:
    parts = [f"{v.name}=v{v.version}" + (" (shadow)" if v.shadow else f" {v.share:.0%}") for v in info.variants]
    return f"{info.name} {info.status} [{info.kind}] on {info.model}: " + ", ".join(parts)


@app.command("create")
def create(
    name: str = typer.Argument(..., metavar="NAME", help="A name for the experiment (unique per tenant)."),
    model: str = typer.Option(..., "--model", help="The registered model whose versions compete."),
    variant: list[str] = typer.Option(..., "--variant", help="NAME=VERSION[:WEIGHT], twice or more (e.g. "
                                      "control=3 --variant treatment=4:0.5); weights of live variants sum to 1, "
                                      "unweighted ones share the rest."),
    shadow: list[str] = typer.Option([], "--shadow", help="A variant that only gets a copy of the traffic (its "
                                     "answer is logged, never returned). Repeatable."),
    metric: str | None = typer.Option(None, "--metric", help="What the outcomes measure (a label for people)."),
    metric_kind: str = typer.Option("rate", "--metric-kind", help="rate (outcomes 0/1: two-proportion z-test) "
                                    "or mean (any number: Welch's t-test)."),
    sample_size: int | None = typer.Option(None, "--sample-size", min=2, help="Declare the outcomes per variant up "
                                           "front: the test decides once, at that size. Default: a sequential "
                                           "test (always-valid p-values) that may be checked any time."),
    alpha: float = typer.Option(0.05, "--alpha", help="False-winner rate the test allows."),
    lower_is_better: bool = typer.Option(False, "--lower-is-better", help="A lower mean wins (e.g. latency)."),
    canary: str | None = typer.Option(None, "--canary", help="Ramp this variant's share in steps and roll back on "
                                      "errors or latency (a canary rollout)."),
    steps: str = typer.Option("0.05,0.25,0.5,1.0", "--steps", help="The canary's shares, increasing."),
    step_s: float = typer.Option(300.0, "--step-s", help="Seconds each canary step runs before the next."),
    max_error_rate: float = typer.Option(0.05, "--max-error-rate", help="Roll back above this share of 5xx."),
    max_p99_ms: float | None = typer.Option(None, "--max-p99-ms", help="Roll back above this p99 latency."),
    min_requests: int = typer.Option(20, "--min-requests", min=1, help="Canary requests a step needs before it "
                                     "is judged or advanced."),
    start: bool = typer.Option(False, "--start", help="Start it at once."),
    json_: bool = JSON_OPT,
) -> None:
    """Create an experiment (a draft until `mlhub ab start`)."""
    from mlhub.domain.abstats import Design
    from mlhub.domain.routing import CanaryPolicy, parse_variant

    try:
        specs = [parse_variant(v) for v in variant]
        design = Design(kind="fixed" if sample_size else "sequential", alpha=alpha, sample_size=sample_size,
                        higher_is_better=not lower_is_better)
        policy = None if canary is None else CanaryPolicy(canary, _floats(steps, "--steps"), step_s,
                                                          max_error_rate, max_p99_ms, min_requests)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    svc = _service()
    principal = STATE.principal()
    info = svc.create(principal, name, model, specs, metric_kind=metric_kind, metric=metric, shadow=shadow,
                      design=design, canary=policy)
    if start:
        info = svc.start(principal, info.id)
    if json_:
        print_json(to_plain(info))
        return
    console.print(_info_line(info), markup=False, highlight=False)
    if not start:
        console.print(f"start it with: mlhub ab start {info.name}", markup=False)


@app.command("start")
def start_cmd(experiment: str = EXP_ARG, json_: bool = JSON_OPT) -> None:
    """Start routing the model's traffic by the experiment."""
    info = _service().start(STATE.principal(), experiment)
    if json_:
        print_json(to_plain(info))
    else:
        console.print(_info_line(info), markup=False, highlight=False)


@app.command("stop")
def stop(experiment: str = EXP_ARG,
         reason: str | None = typer.Option(None, "--reason", help="Why (kept with the experiment)."),
         json_: bool = JSON_OPT) -> None:
    """Stop the experiment: the model's alias serves all traffic again."""
    info = _service().stop(STATE.principal(), experiment, reason=reason)
    if json_:
        print_json(to_plain(info))
    else:
        console.print(_info_line(info), markup=False, highlight=False)


@app.command("list")
def list_cmd(model: str | None = typer.Option(None, "--model", help="Only this model's experiments."),
             json_: bool = JSON_OPT) -> None:
    """Your experiments."""
    rows = _service().list(STATE.principal(), model=model)
    if json_:
        print_json(to_plain(rows))
        return
    print_table([{"id": i.id, "name": i.name, "model": i.model, "kind": i.kind, "status": i.status,
                  "variants": ", ".join(f"{v.name}=v{v.version}" for v in i.variants), "winner": i.winner,
                  "started_at": i.started_at} for i in rows],
                ["id", "name", "model", "kind", "status", "variants", "winner", "started_at"], "experiments")


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


@app.command("status")
def status(experiment: str = EXP_ARG, json_: bool = JSON_OPT) -> None:
    """Per-variant counts, means, confidence intervals, the significance test and the verdict."""
    report = _service().status(STATE.principal(), experiment)
    if json_:
        print_json(to_plain(report))
        return
    info = report.experiment
    console.print(_info_line(info), markup=False, highlight=False)
    design = info.design
    console.print(f"outcome: {info.metric or 'outcome'} ({info.metric_kind}); design: "
                  + (f"fixed sample size {design.sample_size} per variant" if design.kind == "fixed"
                     else "sequential (always-valid p-values: safe to check any time)")
                  + f", alpha {design.alpha:g}", markup=False, highlight=False)
    ci = f"{design.confidence:.0%} CI"
    rows: list[dict[str, Any]] = [{
        "variant": v.name + (" (shadow)" if v.shadow else ""), "version": v.version,
        "share": "copy" if v.shadow else f"{v.share:.0%}", "assigned": v.assigned, "outcomes": v.outcomes,
        "mean": _fmt(v.mean), ci: "-" if v.ci_low is None else f"[{v.ci_low:.4g}, {v.ci_high:.4g}]",
        "requests": v.requests, "errors": v.errors} for v in report.variants]
    print_table(rows, ["variant", "version", "share", "assigned", "outcomes", "mean", ci, "requests", "errors"],
                f"experiment {info.name}")
    if report.analysis is not None and any(c.difference is not None for c in report.analysis.comparisons):
        cmp_rows = [{"comparison": f"{c.treatment} vs {c.control}", "test": c.test, "difference": _fmt(c.difference),
                     "CI": "-" if c.ci_low is None else f"[{c.ci_low:.4g}, {c.ci_high:.4g}]",
                     "statistic": _fmt(c.statistic), "p (classic)": _fmt(c.p_value, 3),
                     "p (decision)": _fmt(c.decision_p, 3), "alpha": f"{c.alpha:g}",
                     "significant": "yes" if c.significant else "no"} for c in report.analysis.comparisons]
        print_table(cmp_rows, ["comparison", "test", "difference", "CI", "statistic", "p (classic)", "p (decision)",
                               "alpha", "significant"], "significance")
    if report.canary is not None:
        c, h = report.canary, report.canary.get("health") or {}
        console.print(f"canary {c['variant']}: step {c['step'] + 1}/{len(c['steps'])} at {c['share']:.0%} "
                      f"({c['phase']}); this step: {h.get('requests', 0)} requests, {h.get('errors', 0)} errors, "
                      f"p99 {_fmt(h.get('p99_ms'))} ms; limits: error rate {c['max_error_rate']:g}"
                      + (f", p99 {c['max_p99_ms']:g} ms" if c.get("max_p99_ms") else ""),
                      markup=False, highlight=False)
    if report.unjoined_outcomes:
        console.print(f"{report.unjoined_outcomes} outcome(s) wait for their request's assignment (joined by key "
                      "when it arrives)", markup=False)
    console.print(report.verdict, markup=False, highlight=False)


@app.command("promote")
def promote(experiment: str = EXP_ARG,
            variant: str | None = typer.Option(None, "--variant", help="Promote this variant (default: the "
                                               "declared winner)."),
            to: str = typer.Option("champion", "--to", help="The alias to move (or a stage)."),
            reason: str | None = typer.Option(None, "--reason", help="Why (kept in the promotion history)."),
            force: bool = typer.Option(False, "--force", help="Promote even if a registry gate fails (needs "
                                       "--reason; audited)."),
            json_: bool = JSON_OPT) -> None:
    """Move the model's alias to the winner through the registry's gates; the experiment ends promoted."""
    result = _service().promote(STATE.principal(), experiment, variant=variant, to=to, reason=reason, force=force)
    if json_:
        print_json(to_plain(result))
        return
    was = f" (was version {result.previous})" if result.previous and result.changed else ""
    forced = " FORCED past failing gates" if result.forced else ""
    console.print(f"{result.model}@{result.alias} -> version {result.version} ({result.variant}){was}{forced}",
                  markup=False, highlight=False)
