"""The web console in a real headless Chromium (Debian's ``chromium`` driven by Playwright for Python).

One browser and one console server for the module: the console's ingress app (the REST API at ``/api``, the
console at ``/ui``) runs under uvicorn in a thread of this process, on the shared test deployment's settings
(PostgreSQL), so the shared orchestrator's jobs are the ones the pages show. No Serve here: the Serve tests
check the same app behind Serve's proxy.

Every browser context blocks any request that is not to the console server and records it: the console must
work offline (plotly.js is served locally), and the last test asserts that nothing tried to leave.

Without Chromium (or Playwright) the module skips with the reason, unless ``MLHUB_REQUIRE_SERVICES=1`` (CI),
where it fails: ``.ci/run`` installs Debian's ``chromium`` (``MLHUB_TEST_CHROMIUM`` names another binary).
``MLHUB_UI_SCREENSHOTS=DIR`` saves full-page PNGs of the main pages into DIR (``docs/screenshots`` in the
repository).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, services_required

pytestmark = [pytest.mark.ray, pytest.mark.postgres]

CHROMIUM = Path(os.environ.get("MLHUB_TEST_CHROMIUM", "/usr/bin/chromium"))  # Debian's package
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 20_000  # one page action or expectation; jobs get longer waits below
VIEWPORT = {"width": 1280, "height": 860}
# read once, at import: every test runs with the MLHUB_* variables cleared and in its own working directory
_SHOTS = os.environ.get("MLHUB_UI_SCREENSHOTS")
SCREENSHOTS = Path(_SHOTS).resolve() if _SHOTS else None
XSS = '<script>alert("mlhub-xss")</script><img src=x onerror=alert(2)>'


def _missing(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason}, but MLHUB_REQUIRE_SERVICES=1: the browser tests must run "
                    "(.ci/run installs Debian's chromium)")
    pytest.skip(reason)


# --- the browser --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@dataclass
class Traffic:
    """What the module's browser contexts asked for: every URL, and those blocked for leaving the server."""

    base: str
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def traffic(console) -> Traffic:
    return Traffic(console)


@pytest.fixture(scope="module")
def new_context(browser, traffic):
    """Make an isolated browser context (its own cookies) that can reach only the console server."""
    made = []

    def make(**options):
        ctx = browser.new_context(viewport=VIEWPORT, base_url=traffic.base, **options)
        ctx.set_default_timeout(TIMEOUT_MS)

        def route(r):
            url = r.request.url
            traffic.requests.append(url)
            if url == traffic.base or url.startswith(traffic.base + "/"):
                r.continue_()
            else:
                traffic.blocked.append(url)
                r.abort("blockedbyclient")

        ctx.route("**/*", route)

        def watch(page):
            page.on("console",
                    lambda m: m.type == "error" and traffic.console_errors.append(f"{page.url}: {m.text}"))
            page.on("pageerror", lambda e: traffic.page_errors.append(f"{page.url}: {e}"))

            def dialog(d):
                traffic.dialogs.append(f"{page.url}: {d.type} {d.message}")
                d.dismiss()

            page.on("dialog", dialog)

        ctx.on("page", watch)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


# --- the console server and the data it shows -------------------------------------------------------------


@pytest.fixture(scope="module")
def console(hub_settings, orchestrator):
    """The console's ingress app under uvicorn in a thread, on a free port: yields its base URL."""
    import uvicorn

    from serve_apps.api import create_server_app

    port = free_port()
    config = uvicorn.Config(create_server_app(hub_settings), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ui-test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the console server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@dataclass
class Tenant:
    name: str
    key: str
    hub: Any


def _tenant(settings, label: str) -> Tenant:
    from mlhub.client import Hub
    from mlhub.store.database import Database
    from mlhub.tenancy import TenantService

    db = Database(settings.effective_database_url)
    name = f"ui-{label}-{uuid.uuid4().hex[:8]}"
    _, key = TenantService(db).create_tenant(name)
    db.dispose()
    return Tenant(name, key, Hub(settings, api_key=key))


def _train(tenant: Tenant, model: str, *, epochs: int = 12):
    return tenant.hub.train({
        "name": model, "framework": "baseline", "model": "logistic", "epochs": epochs,
        "params": {"lr": 0.1}, "dataset": {"source": "synthetic", "task": "classification", "n_samples": 300,
                                           "n_features": 6}})


@dataclass
class World:
    a: Tenant
    b: Tenant
    model: str  # A's: versions 1 and 2
    b_model: str
    runs: list[int]  # A's two training runs
    a_job: int  # A's first training job
    b_job: int
    hpo_job: int


@pytest.fixture(scope="module")
def world(hub_settings, orchestrator):
    """Tenants A and B: A trains one model twice (versions 1, 2) and runs a small search, B trains a model of
    its own, all at once."""
    a, b = _tenant(hub_settings, "a"), _tenant(hub_settings, "b")
    model, b_model = "ui-logit", f"b-secret-{uuid.uuid4().hex[:6]}"
    jobs = [_train(a, model), _train(a, model), _train(b, b_model, epochs=3)]
    # a small search (4 trials, 2 at a time) beside the trainings: about 10 s more for the module here
    hpo = a.hub.tune({
        "name": "ui-search", "metric": "val_loss", "mode": "min", "max_concurrent_trials": 2,
        "num_samples": 4,
        "trainer": {"name": "ui-search-model", "framework": "baseline", "model": "logistic", "epochs": 8,
                    "dataset": {"source": "synthetic", "task": "classification", "n_samples": 300}},
        "search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1.0},
                         "l2": {"type": "choice", "values": [0.0, 0.01]}}})
    first, second, b_info = (j.wait(timeout=180) for j in jobs)
    hpo.wait(timeout=240)
    assert {first.result["model_version"], second.result["model_version"]} == {1, 2}
    assert b_info.state == "succeeded"
    w = World(a, b, model, b_model, [first.result["run_id"], second.result["run_id"]], jobs[0].id, jobs[2].id,
              hpo.id)
    yield w
    a.hub.close()
    b.hub.close()


@pytest.fixture(scope="module")
def as_a(new_context, world):
    """A browser context logged in as tenant A."""
    ctx = new_context()
    page = ctx.new_page()
    login(page, world.a.key)
    page.close()
    return ctx


@pytest.fixture
def page(as_a):
    """A fresh tab of tenant A's session (closed after the test, so no page keeps polling)."""
    tab = as_a.new_page()
    yield tab
    tab.close()


# --- helpers ------------------------------------------------------------------------------------------------


def expect(locator):
    """Playwright's retrying assertions (they query the page; a string predicate would be eval, which the
    console's Content-Security-Policy forbids, as it should)."""
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def login(page, key: str) -> None:
    page.goto("/ui/login")
    page.fill("input[name=api_key]", key)
    submit(page.locator("form[action$='/ui/login']"))
    page.wait_for_url("**/ui/jobs")


def shot(page, name: str) -> None:
    """A full-page PNG of ``page`` into $MLHUB_UI_SCREENSHOTS, when it is set."""
    if SCREENSHOTS is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def plotted(page, selector: str) -> None:
    """Wait until plotly has drawn a chart inside ``selector`` (its SVG layer exists)."""
    page.wait_for_selector(f"{selector} .plot-container .main-svg", state="attached")


def set_field(form, name: str, value: str) -> None:
    element = form.locator(f"[name={name}]")
    if element.evaluate("e => e.tagName") == "SELECT":
        element.select_option(value)
    else:
        element.fill(value)


def submit(form) -> None:
    """Submit ``form`` and wait for the page its answer leads to (the POST answers 303)."""
    with form.page.expect_navigation():
        form.locator("button, input[type=submit]").first.click()


# --- the tests ---------------------------------------------------------------------------------------------


def test_login_with_a_tenant_key_and_a_bad_key_is_refused(new_context, world):
    ctx = new_context()
    page = ctx.new_page()
    page.goto("/ui/jobs")
    page.wait_for_url("**/ui/login")  # no session: to the login page
    page.fill("input[name=api_key][type=password]", "mlh_not-a-real-key")
    submit(page.locator("form[action$='/ui/login']"))
    expect(page.locator("#login-error")).to_be_visible()
    assert not [c for c in ctx.cookies() if c["name"] == "mlhub_session"]

    login(page, world.a.key)
    assert page.inner_text("#tenant").strip() == world.a.name
    [cookie] = [c for c in ctx.cookies() if c["name"] == "mlhub_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert world.a.key not in cookie["value"]  # a signed session token, not the API key
    assert page.evaluate("document.cookie").find("mlhub_session") < 0  # no script reads the key
    page.wait_for_selector("#queues")
    assert page.locator(f"#jobs tr[data-job-id='{world.b_job}']").count() == 0  # B's job is not in A's list

    submit(page.locator("#logout"))
    page.wait_for_url("**/ui/login")
    page.goto("/ui/jobs")
    page.wait_for_url("**/ui/login")  # logged out for real


def test_a_job_page_follows_the_job_live_until_it_succeeds(page, world):
    job = world.a.hub.submit({"kind": "diagnostic", "name": "ui-watch", "sleep_s": 3, "print_lines": 3})
    page.goto(f"/ui/jobs/{job.id}")
    first = page.inner_text("#job-state").strip()
    assert first in {"queued", "running"}, first
    page.evaluate("window.__sameDocument = 'yes'")  # gone if the page reloads or navigates
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=90_000)
    assert page.evaluate("window.__sameDocument") == "yes"  # polled, not reloaded
    assert job.status().state == "succeeded"
    page.reload()
    page.wait_for_selector("#job-logs")
    assert "diagnostic line 3 of 3" in page.inner_text("#job-logs")
    assert page.locator("#job-progress").count() == 1
    if SCREENSHOTS is not None:  # a training job's page makes the better picture
        page.goto(f"/ui/jobs/{world.a_job}")
        shot(page, "job")

    page.goto("/ui/jobs")
    row = page.locator(f"#jobs tr[data-job-id='{job.id}']")
    assert row.locator(".state").inner_text().strip() == "succeeded"
    assert page.locator("#queues").inner_text().lower().count("training") >= 1
    shot(page, "jobs")


def test_cancel_from_the_job_page(page, world):
    from mlhub.errors import JobFailed

    job = world.a.hub.submit({"kind": "diagnostic", "name": "ui-cancel", "sleep_s": 600})
    page.goto(f"/ui/jobs/{job.id}")
    submit(page.locator("#cancel-form"))
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=60_000)
    with pytest.raises(JobFailed, match="cancelled"):
        job.wait(timeout=30)


def test_a_run_page_draws_its_metric_curves_and_runs_compare(page, world):
    run = world.runs[0]
    page.goto(f"/ui/runs/{run}")
    assert "lr" in page.inner_text("#params")
    plotted(page, "#metrics-chart")
    assert page.locator("#metrics-chart .main-svg path").count() > 0
    shot(page, "run")

    page.goto(f"/ui/runs/compare?ids={world.runs[0]},{world.runs[1]}")
    plotted(page, "#compare-chart")


def test_promote_through_a_passing_gate_and_a_failing_gate_refuses(page, world):
    models = world.a.hub.models

    def aliases() -> dict[str, int]:  # from the database (hub.models.get may answer from its own cache)
        return models.show(world.model).aliases

    models.set_gates(world.model, ["accuracy >= 0.0 for champion", "accuracy >= 1.1 for challenger"])
    page.goto(f"/ui/models/{world.model}")
    gates = page.inner_text("#gates")
    assert "1.1" in gates and "challenger" in gates

    form = page.locator("#promote-form")
    set_field(form, "version", "1")
    set_field(form, "to", "champion")
    if form.locator("[name=reason]").count():
        set_field(form, "reason", "browser test")
    submit(form)
    assert "ok" in page.get_attribute("#flash", "class").split(), page.inner_text("#flash")
    assert aliases()["champion"] == 1  # the registry's own record
    assert "champion" in page.inner_text("#aliases")
    assert "champion" in page.inner_text("#history")
    shot(page, "model")

    form = page.locator("#promote-form")
    set_field(form, "version", "2")
    set_field(form, "to", "challenger")
    submit(form)
    assert "error" in page.get_attribute("#flash", "class").split()
    refused = page.inner_text("#flash")
    assert "accuracy >= 1.1" in refused, refused
    shot(page, "model-refused")
    assert "challenger" not in aliases()
    assert aliases()["champion"] == 1  # unchanged
    moves = [(h.to_version, h.target, h.forced) for h in models.history(world.model)]
    assert moves == [(1, "champion", False)]  # the refusal moved nothing

    # version 2 passes the champion's gate; the rollback form hands the alias back to version 1
    form = page.locator("#promote-form")
    set_field(form, "version", "2")
    set_field(form, "to", "champion")
    submit(form)
    assert "ok" in page.get_attribute("#flash", "class").split(), page.inner_text("#flash")
    assert aliases()["champion"] == 2
    form = page.locator("#rollback-form")
    if form.locator("[name=alias]").count():
        set_field(form, "alias", "champion")
    submit(form)
    assert "ok" in page.get_attribute("#flash", "class").split(), page.inner_text("#flash")
    assert aliases()["champion"] == 1
    assert [h.action for h in models.history(world.model)][0] == "rollback"


def test_tenant_b_models_are_absent_for_tenant_a(page, world):
    page.goto("/ui/models")
    assert page.locator(f"#models tr[data-model='{world.model}']").count() == 1
    assert page.locator(f"#models tr[data-model='{world.b_model}']").count() == 0
    assert world.b_model not in page.content()
    for path in (f"/ui/models/{world.b_model}", f"/ui/jobs/{world.b_job}"):
        response = page.goto(path)
        assert response.status == 404, path


def test_an_hpo_page_draws_trials_and_parameters_and_health_shows_the_backends(page, world):
    page.goto(f"/ui/hpo/{world.hpo_job}")
    assert page.locator("#trials tbody tr").count() == 4
    plotted(page, "#trials-chart")
    plotted(page, "#params-chart")
    shot(page, "hpo")
    for path in ("/ui/runs", "/ui/experiments", "/ui/monitors"):  # the other lists answer (empty or not)
        assert page.goto(path).ok, path
    page.goto("/ui/health")
    text = page.inner_text("#health").lower()
    assert "database" in text or "postgres" in text
    shot(page, "health")


def test_user_text_is_escaped_and_nothing_leaves_the_server(new_context, world, traffic):
    world.a.hub.models.describe(world.model, XSS)
    world.a.hub.models.describe(world.model, XSS, version=1)
    # without the console's Content-Security-Policy (which would stop an inline script anyway), so that only
    # the escaping stands between the description and a dialog
    ctx = new_context(bypass_csp=True)
    tab = ctx.new_page()
    login(tab, world.a.key)
    for path in ("/ui/models", f"/ui/models/{world.model}"):
        tab.goto(path)
        assert XSS in tab.inner_text("body"), path  # shown as text
        assert tab.locator("img[src=x]").count() == 0
        assert tab.locator("script:not([src])").filter(has_text="mlhub-xss").count() == 0
    tab.wait_for_timeout(300)  # an alert would have fired by now
    assert traffic.dialogs == []

    # every page the module opened asked only the console server (plotly.js included)
    assert traffic.blocked == []
    assert any(u.endswith("/ui/static/plotly.min.js") for u in traffic.requests)
    assert traffic.page_errors == []
    # (a 401 or 404 answer is logged as "Failed to load resource"; a CSP violation or a script error is not)
    assert [e for e in traffic.console_errors if "Failed to load resource" not in e] == []
