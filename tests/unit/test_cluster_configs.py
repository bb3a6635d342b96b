"""Everything under cluster/ parses and names only what mlhub and Ray really have (no Ray started, no servers).

- every YAML/JSON file parses (the RayService's embedded serveConfigV2 too);
- every ``MLHUB_*`` name in any file is a field of :class:`mlhub.config.Settings`, and the example values
  (cluster/mlhub.env.example, the Secret example) pass Settings' own validation;
- serve.yaml and the RayService's serveConfigV2 validate with Ray's ServeDeploySchema, name the same
  applications, route prefixes and importable builders;
- the Ray head port is 6380 (never Redis's 6379) and token auth is on in every way a cluster is started or
  reached here (ray up, KubeRay, runtime env, job scripts, README);
- the ``ray up`` YAML validates with Ray's own ray-schema.json and has the keys and node types mlhub needs;
- the KubeRay manifests are ray.io/v1 RayCluster/RayService with head, cpu and gpu groups, the Ray version of
  mlhub's pin, and the backends' Secret;
- every ``mlhub`` command line in the configs is a real command with real options;
- every metric the Grafana dashboard queries is one mlhub defines with ``ray.util.metrics`` (and the reverse).
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import ray
import typer
import yaml

from mlhub.cli.main import app as cli_app
from mlhub.config import Settings, env_name
from tests.unit.test_serve_config import CONFIG as SERVE_YAML
from tests.unit.test_serve_config import EXPECTED_APPS, validate_serve_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
RAY_UP = CLUSTER / "ray-cluster.yaml"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYSERVICE = CLUSTER / "kuberay" / "rayservice.yaml"
SECRETS = CLUSTER / "kuberay" / "secret.example.yaml"
DOCKERFILE = CLUSTER / "kuberay" / "Dockerfile"
ENV_EXAMPLE = CLUSTER / "mlhub.env.example"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
PROMETHEUS = CLUSTER / "monitoring" / "prometheus.yml"
GRAFANA = CLUSTER / "monitoring" / "grafana-mlhub.json"
JOB_SCRIPTS = sorted((CLUSTER / "jobs").glob("*.sh"))
README = CLUSTER / "README.md"

HEAD_PORT = 6380
REDIS_PORT = 6379
SETTINGS_ENV = {env_name(field) for field in Settings.model_fields}
STRUCTURED = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
TEXT_FILES = sorted(p for p in CLUSTER.rglob("*") if p.is_file() and p.name != ".gitignore")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _docs(path: Path) -> list:
    if path.suffix == ".json":
        return [json.loads(path.read_text())]
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _one(path: Path) -> dict:
    (doc,) = _docs(path)
    return doc


# --- every file parses ------------------------------------------------------------------------------------


def test_cluster_folder_holds_the_configs_mlhub_documents():
    for path in (RAY_UP, RAYCLUSTER, RAYSERVICE, SECRETS, DOCKERFILE, ENV_EXAMPLE, RUNTIME_ENV, PROMETHEUS,
                 GRAFANA, README, SERVE_YAML):
        assert path.is_file(), f"missing {_rel(path)}"
    assert JOB_SCRIPTS, "no job-submission examples in cluster/jobs/"


@pytest.mark.parametrize("path", STRUCTURED, ids=_rel)
def test_every_yaml_and_json_file_parses(path):
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs), f"{_rel(path)}: expected mapping documents"


def test_rayservice_serve_config_is_yaml():
    assert isinstance(yaml.safe_load(_one(RAYSERVICE)["spec"]["serveConfigV2"]), dict)


# --- MLHUB_* names are Settings fields ----------------------------------------------------------------------

MLHUB_NAME = re.compile(r"\bMLHUB_[A-Z0-9_]*[A-Z0-9]\b")


def unknown_mlhub_names(text: str) -> set[str]:
    return set(MLHUB_NAME.findall(text)) - SETTINGS_ENV


def test_a_misspelt_setting_is_caught():
    assert unknown_mlhub_names("MLHUB_DATABSE_URL=postgresql+psycopg://x@y/z") == {"MLHUB_DATABSE_URL"}
    assert not unknown_mlhub_names("MLHUB_DATABASE_URL=postgresql+psycopg://x@y/z")


@pytest.mark.parametrize("path", TEXT_FILES, ids=_rel)
def test_every_mlhub_variable_named_in_cluster_is_a_setting(path):
    unknown = unknown_mlhub_names(path.read_text())
    assert not unknown, f"{_rel(path)} names {sorted(unknown)}, which mlhub.config.Settings does not read"


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"mlhub.env.example: not KEY=VALUE: {line!r}"
            (out[key.strip()],) = shlex.split(value) or [""]
    return out


def _settings_from_env(env: dict[str, str], monkeypatch) -> Settings:
    """Settings as mlhub builds them from these environment variables (JSON values decoded as from the
    environment), and from nothing else."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_env_example_sets_the_backends_with_values_settings_accepts(monkeypatch):
    env = _env_example()
    assert set(env) <= SETTINGS_ENV
    assert {"MLHUB_DATABASE_URL", "MLHUB_REDIS_URL", "MLHUB_MONGODB_URI", "MLHUB_RAY_STORAGE"} <= set(env)
    settings = _settings_from_env(env, monkeypatch)
    assert settings.effective_database_url.startswith("postgresql+psycopg://")
    assert settings.queue_concurrency  # the JSON value survives shell quoting


def _secret(name: str) -> dict:
    docs = {d["metadata"]["name"]: d for d in _docs(SECRETS)}
    assert docs[name]["kind"] == "Secret" and docs[name]["apiVersion"] == "v1"
    return docs[name].get("stringData") or docs[name]["data"]


def test_backend_secret_keys_are_settings_with_valid_values(monkeypatch):
    data = _secret("mlhub-backends")
    assert set(data) == {"MLHUB_DATABASE_URL", "MLHUB_REDIS_URL", "MLHUB_MONGODB_URI"}
    assert set(data) <= SETTINGS_ENV  # envFrom: each key becomes an environment variable of that name
    assert _settings_from_env(data, monkeypatch).mongodb_uri is not None


USERINFO_PASSWORD = re.compile(r"://[^:/\s@'\"]*:([^@\s/'\"]+)@")
PLACEHOLDER = re.compile(r"^(<[^>]+>|\.\.\.|\$\{?\w+\}?)$")


@pytest.mark.parametrize("path", TEXT_FILES, ids=_rel)
def test_no_password_is_written_into_a_config(path):
    for password in USERINFO_PASSWORD.findall(path.read_text()):
        assert PLACEHOLDER.match(password), f"{_rel(path)}: a URL carries a password; use <password>"


# --- Serve configs --------------------------------------------------------------------------------------------


def test_rayservice_serves_the_applications_of_serve_yaml():
    serve_yaml = validate_serve_config(yaml.safe_load(SERVE_YAML.read_text()))
    rayservice = validate_serve_config(yaml.safe_load(_one(RAYSERVICE)["spec"]["serveConfigV2"]))
    assert {n: a.route_prefix for n, a in rayservice.items()} == EXPECTED_APPS
    for name, app in serve_yaml.items():
        assert (rayservice[name].import_path, rayservice[name].args) == (app.import_path, app.args), name


def test_serve_config_check_fails_on_a_wrong_import_path():
    doc = yaml.safe_load(SERVE_YAML.read_text())
    doc["applications"][0]["import_path"] = "serve_apps.inference:no_such_builder"
    with pytest.raises(AttributeError):
        validate_serve_config(doc)


# --- head port and token auth --------------------------------------------------------------------------------


def _ray_up_commands(doc: dict) -> list[str]:
    return [" ".join(c.split()) for key in ("head_start_ray_commands", "worker_start_ray_commands")
            for c in doc[key]]


def test_ray_up_head_listens_on_6380_and_workers_join_it():
    doc = _one(RAY_UP)
    starts = [c for c in _ray_up_commands(doc) if "ray start" in c]
    heads = [c for c in starts if "--head" in c]
    assert len(heads) == 1 and f"--port={HEAD_PORT}" in heads[0]
    workers = [c for c in starts if "--head" not in c]
    assert workers and all(f"--address=$RAY_HEAD_IP:{HEAD_PORT}" in c for c in workers)
    assert not any(str(REDIS_PORT) in c for c in starts)


@pytest.mark.parametrize("path", TEXT_FILES, ids=_rel)
def test_every_ray_start_head_names_port_6380(path):
    for line in path.read_text().splitlines():
        if "ray start --head" in line and "KUBERAY_GEN" not in line:
            assert re.search(rf"--port[= ]{HEAD_PORT}\b", line), f"{_rel(path)}: {line.strip()}"


@pytest.mark.parametrize("path", TEXT_FILES, ids=_rel)
def test_token_auth_is_never_turned_off(path):
    for mode in re.findall(r"RAY_AUTH_MODE\s*[=:]\s*[\"']?(\w+)", path.read_text()):
        assert mode == "token", f"{_rel(path)} sets RAY_AUTH_MODE={mode}"


def test_ray_up_keeps_token_auth_on_every_node():
    doc = _one(RAY_UP)
    for command in _ray_up_commands(doc):
        if "ray start" in command or "mlhub " in command:
            assert "RAY_AUTH_MODE=token" in command, command
    # the token itself reaches every node (and `ray start` refuses token mode without one)
    assert doc["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def _kuberay_cluster_spec(path: Path) -> dict:
    doc = _one(path)
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterConfig"]


def _ray_containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [g["template"]["spec"]["containers"][0] for g in groups]


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYSERVICE], ids=_rel)
def test_kuberay_head_port_and_token_auth(path):
    spec = _kuberay_cluster_spec(path)
    assert spec["headGroupSpec"]["rayStartParams"]["port"] == str(HEAD_PORT)
    head = _ray_containers(spec)[0]
    assert {p["name"]: p["containerPort"] for p in head["ports"]}["gcs-server"] == HEAD_PORT
    assert spec["authOptions"]["mode"] == "token"
    assert "auth_token" in _secret(spec["authOptions"]["secretName"])
    for container in _ray_containers(spec):
        assert all(e["name"] != "RAY_AUTH_MODE" or e["value"] == "token" for e in container.get("env", []))


def test_runtime_env_and_job_scripts_use_token_auth():
    runtime_env = _one(RUNTIME_ENV)
    assert runtime_env["env_vars"]["RAY_AUTH_MODE"] == "token"
    assert "MLHUB_API_KEY" not in runtime_env["env_vars"]  # a secret: the scripts add it from the shell
    submitters = [p for p in JOB_SCRIPTS if "ray job submit" in p.read_text()]
    assert submitters
    for script in submitters:
        text = script.read_text()
        assert "export RAY_AUTH_MODE=token" in text and "--working-dir ." in text, _rel(script)
    for script in JOB_SCRIPTS:  # the others go through a submitter
        text = script.read_text()
        assert script in submitters or any(s.name in text for s in submitters), _rel(script)


# --- ray up -------------------------------------------------------------------------------------------------


def test_ray_up_yaml_validates_with_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_one(RAY_UP), schema)


def test_ray_up_has_head_cpu_and_gpu_node_types():
    doc = _one(RAY_UP)
    for key in ("cluster_name", "max_workers", "available_node_types", "head_node_type", "provider",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands", "file_mounts"):
        assert doc.get(key), f"ray-cluster.yaml lacks {key}"
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    workers = {name: t for name, t in types.items() if name != doc["head_node_type"]}
    assert all(t["resources"].get("CPU", 0) > 0 for t in types.values())
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers.values()), "no GPU worker type"
    assert any(not t["resources"].get("GPU") for t in workers.values()), "no CPU worker type"
    assert sum(t.get("max_workers", 0) for t in workers.values()) <= doc["max_workers"] + 8


def test_ray_up_installs_mlhub_and_loads_its_settings_on_every_node():
    doc = _one(RAY_UP)
    assert any("pip install" in c and "mlhub" in c for c in doc["setup_commands"])
    assert doc["file_mounts"]["~/mlhub.env"] == "./cluster/mlhub.env"
    assert (CLUSTER / ".gitignore").read_text().split() == ["mlhub.env"]  # the filled-in copy stays out of git
    for command in _ray_up_commands(doc):
        if "ray start" in command:
            assert ". ~/mlhub.env" in command, command
            for var in ("RAY_SERVE_THROUGHPUT_OPTIMIZED=1", "RAY_SERVE_ENABLE_HA_PROXY=1"):
                assert var in command, command
    head = " ".join(doc["head_start_ray_commands"])
    assert "mlhub db upgrade" in head and "mlhub start --address" in head


# --- KubeRay ------------------------------------------------------------------------------------------------


def _ray_pin() -> str:
    (pin,) = re.findall(r'"ray\[[^\]]*\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    return pin


@pytest.mark.parametrize(("path", "kind"), [(RAYCLUSTER, "RayCluster"), (RAYSERVICE, "RayService")],
                         ids=["RayCluster", "RayService"])
def test_kuberay_manifest_shape(path, kind):
    doc = _one(path)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", kind)
    spec = _kuberay_cluster_spec(path)
    assert spec["rayVersion"] == _ray_pin() == ray.__version__
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(gpu["nvidia.com/gpu"]) >= 1
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert doc["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    for container in _ray_containers(spec):
        assert {"secretRef": {"name": "mlhub-backends"}} in container["envFrom"]
        assert "KUBERAY_GEN_RAY_START_CMD" in " ".join(container["args"])  # Ray still starts
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert set(n for n in env if n.startswith("MLHUB_")) <= SETTINGS_ENV
    head_script = " ".join(_ray_containers(spec)[0]["args"])
    assert "mlhub db upgrade" in head_script and 'mlhub start --address "$RAY_ADDRESS"' in head_script
    # KubeRay deploys a RayService's Serve apps itself; a plain RayCluster gets them from `mlhub start`
    assert ("--no-serve" in head_script) == (kind == "RayService")


def test_images_carry_rays_pinned_version():
    pin = _ray_pin()
    (base,) = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    images = [base, _one(RAY_UP)["docker"]["image"],
              *(t["docker"]["worker_image"] for t in _one(RAY_UP)["available_node_types"].values() if "docker" in t)]
    assert all(image.startswith(f"rayproject/ray:{pin}-py311") for image in images), images


# --- mlhub command lines are real --------------------------------------------------------------------------

MLHUB_CALL = re.compile(r"(?:^|[\s`(;&|\"])mlhub ((?:\\\n|[^\n`;&|)\"])+)")


def mlhub_calls(text: str) -> list[list[str]]:
    """The arguments of each ``mlhub ...`` command line in shell, YAML or the code of Markdown."""
    calls = []
    for match in MLHUB_CALL.findall(text):
        line = match.replace("\\\n", " ")
        try:
            calls.append(shlex.split(line, comments=True))
        except ValueError:  # an unbalanced quote cut off by the match
            calls.append(line.split("#")[0].split())
    return calls


def _code_of(path: Path) -> str:
    """The command lines of a file: its lines that are not comments, and what comments quote in backticks (the
    code blocks and inline code of Markdown)."""
    text = path.read_text()
    if path.suffix == ".md":
        text = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text))
    lines = []
    for line in text.splitlines():
        code, _, comment = ("", "", line) if line.lstrip().startswith("#") else line.partition(" # ")
        lines.extend([code, *re.findall(r"`([^`]+)`", comment)])
    return "\n".join(lines)


def check_mlhub_call(args: list[str]) -> None:
    root = typer.main.get_command(cli_app)
    options = {o for p in root.params for o in p.opts}
    while args and args[0].startswith("--"):
        args = args[1:]
    cmd = root.commands.get(args[0]) if args else None
    assert cmd is not None, f"no command `mlhub {' '.join(args)}`"
    args = args[1:]
    if hasattr(cmd, "commands"):
        sub = args[0] if args else ""
        assert sub in cmd.commands, f"no command `mlhub {cmd.name} {sub}`"
        cmd, args = cmd.commands[sub], args[1:]
    options |= {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] in options, f"`mlhub {cmd.name}` has no option {arg}"


def test_a_wrong_mlhub_command_line_is_caught():
    check_mlhub_call(["start", "--address", "auto", "--no-serve"])
    with pytest.raises(AssertionError):
        check_mlhub_call(["start", "--no-serving"])
    with pytest.raises(AssertionError):
        check_mlhub_call(["db", "migrate"])


@pytest.mark.parametrize("path", [p for p in TEXT_FILES if p.suffix != ".json"], ids=_rel)
def test_every_mlhub_command_line_in_cluster_is_real(path):
    calls = mlhub_calls(_code_of(path))
    for args in calls:
        if args and args[0] not in ("COMMAND", "...") and re.fullmatch(r"[a-z][a-z-]*", args[0]):
            check_mlhub_call(args)


# --- Prometheus and Grafana ----------------------------------------------------------------------------------

EXPORT_SUFFIXES = {"Gauge": ("",), "Counter": ("_total", ""), "Histogram": ("_bucket", "_sum", "_count")}


@cache
def defined_metrics() -> dict[str, str]:
    """Metric name -> kind for every ray.util.metrics Counter/Gauge/Histogram in actors/, mlhub/, serve_apps/."""
    found = {}
    for package in ("actors", "mlhub", "serve_apps"):
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            if "ray.util" not in source or "metrics" not in source:
                continue
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if kind not in EXPORT_SUFFIXES:
                    continue
                name = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    found[name.value] = kind
    return found


def exported_names() -> dict[str, str]:
    """Prometheus series name (as Ray exports it, prefixed ``ray_``) -> mlhub's metric name."""
    return {f"ray_{name}{suffix}": name for name, kind in defined_metrics().items()
            for suffix in EXPORT_SUFFIXES[kind]}


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "le", "inf", "nan"}


def promql_metrics(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels, grouping, durations or numbers)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)                     # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                    # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\s*(\()?", expr):
        if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def _grafana_queries() -> list[str]:
    dash = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            (metric,) = re.fullmatch(r"label_values\((\w+)\s*,\s*\w+\)", query).groups()
            exprs.append(metric)
    return exprs


def test_mlhub_defines_the_metrics_the_dashboard_is_about():
    assert {"mlhub_queue_depth", "mlhub_jobs_running", "mlhub_job_wait_seconds",
            "mlhub_job_duration_seconds"} <= set(defined_metrics())


def test_promql_parsing_catches_an_unknown_metric():
    assert promql_metrics('histogram_quantile(0.95, sum by (le, queue) (rate(ray_mlhub_job_wait_seconds_bucket'
                          '{queue=~"$queue"}[$__rate_interval])))') == {"ray_mlhub_job_wait_seconds_bucket"}
    typo = promql_metrics('sum by (queue) (ray_mlhub_queue_dept{queue="training"}) / 2')
    assert typo == {"ray_mlhub_queue_dept"} and not typo <= set(exported_names())


def test_every_dashboard_query_uses_metrics_mlhub_exports():
    exported = exported_names()
    queried = set()
    for expr in _grafana_queries():
        names = promql_metrics(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - set(exported)
        assert not unknown, f"the dashboard queries {sorted(unknown)}, which mlhub does not export: {expr}"
        queried |= {exported[n] for n in names}
    missing = set(defined_metrics()) - queried
    assert not missing, f"metrics mlhub exports but no panel shows: {sorted(missing)}"


def test_prometheus_reads_the_discovery_file_ray_writes():
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    jobs = {j["job_name"]: j for j in _one(PROMETHEUS)["scrape_configs"]}
    files = [f for sd in jobs["ray"]["file_sd_configs"] for f in sd["files"]]
    assert files == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]
    # the port Prometheus finds there is the one every config gives `ray start`
    assert "--metrics-export-port=8080" in " ".join(_ray_up_commands(_one(RAY_UP)))
    for path in (RAYCLUSTER, RAYSERVICE):
        spec = _kuberay_cluster_spec(path)
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            assert group["rayStartParams"]["metrics-export-port"] == "8080"
