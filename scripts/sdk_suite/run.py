"""Run the openai-agents SDK's own test suite twice: plain, then watched by agents-watchdog.

``make sdk-suite`` runs this. It downloads the sdist of exactly the installed
openai-agents version (it ships ``tests/``), builds a separate venv with the SDK's test
dependencies and this project, runs the suite once plain (the baseline) and once with
``watchdog_attach`` (a real sidecar, a WatchdogProcessor on every test), and reports:
tests whose outcome changed, watchdog log records at WARNING+, and spans the sidecar
still holds as hung or orphaned at the end. Exit status 1 when any of those is found.

Everything lives under ``.tools/sdk-suite/`` (gitignored); the report goes to
``.tools/sdk-suite/report/report.txt``. Each run is split as the SDK splits it: tests
not marked ``serial`` under pytest-xdist, then the ``serial`` ones alone.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = REPO / ".tools" / "sdk-suite"
VENV = WORK / "venv"
VENV_PY = VENV / "bin" / "python"
SNAPSHOT = WORK / "snapshot"
REQUIREMENTS = HERE / "requirements.txt"
# The sidecar for the attached run: short thresholds, so that anything left open shows.
SIDECAR_CONFIG = """\
[thresholds]
default = 5
trace = 10
task = 10
agent = 10
turn = 10
"""
# Test files both runs leave out, and why: they break the pytest worker that runs them,
# whatever is attached, which ends the whole xdist session early.
UNSAFE = {
    "tests/sandbox/test_docker_removal_worker.py": "monkeypatches os.stat and os.fork of the"
    " whole process; a failure then crashes the xdist worker (INTERNALERROR, run cut short)",
}
# More changes than this mean something systemic: rerunning them would tell nothing.
MAX_RERUN = 200
PYTEST_COMMON = [
    "-p",
    "no:cacheprovider",
    "-q",
    "-rfE",
    "--durations=15",
    "--timeout=300",
    "-o",
    "junit_family=xunit1",
]


def snapshot_watchdog(ref: str | None) -> str:
    """Copy ``watchdog/`` (the working tree, or ``ref``) to SNAPSHOT, which the attached
    runs put first on PYTHONPATH; returns what was copied.

    The venv has this checkout installed in editable mode; without a snapshot, edits
    made while the suite runs would change the code under test half-way through."""
    shutil.rmtree(SNAPSHOT, ignore_errors=True)
    SNAPSHOT.mkdir(parents=True)
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if ref:
        archive = subprocess.run(
            [*git, "archive", ref, "watchdog"], capture_output=True, check=True
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(SNAPSHOT, filter="data")
        sha = subprocess.run([*git, "rev-parse", "--short", ref], capture_output=True, text=True)
        described = f"git {ref} = {sha.stdout.strip()}"
    else:
        shutil.copytree(
            REPO / "watchdog", SNAPSHOT / "watchdog", ignore=shutil.ignore_patterns("__pycache__")
        )
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", "watchdog"], capture_output=True, text=True
        ).stdout.splitlines()
        described = f"working tree at HEAD {head.stdout.strip()}" + (
            f" with {len(changed)} uncommitted file(s) in watchdog/" if changed else ""
        )
    digest = hashlib.sha256()
    for path in sorted((SNAPSHOT / "watchdog").rglob("*.py")):
        digest.update(str(path.relative_to(SNAPSHOT)).encode() + b"\0" + path.read_bytes())
    return f"{described} (watchdog/ sha256 {digest.hexdigest()[:12]})"


def log(message: str) -> None:
    print(f"[sdk-suite] {message}", flush=True)


def sdk_source(sdk_version: str) -> Path:
    """The extracted sdist of ``openai-agents==sdk_version``, downloaded once."""
    sdist_dir = WORK / "sdist"
    name = f"openai_agents-{sdk_version}"
    archive = sdist_dir / f"{name}.tar.gz"
    if not archive.exists():
        log(f"downloading the sdist of openai-agents {sdk_version}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet"]
            + ["--no-binary", ":all:", "--no-deps", f"openai-agents=={sdk_version}"]
            + ["-d", str(sdist_dir)],
            check=True,
        )
    source = WORK / "src" / name
    if not (source / "tests").is_dir():
        with tarfile.open(archive) as tar:
            tar.extractall(WORK / "src", filter="data")
    return source


def ensure_venv(sdk_version: str, archive: Path) -> str:
    """Create or update the suite's venv; returns the key of what is installed in it."""
    digest = hashlib.sha256()
    for part in (REQUIREMENTS.read_bytes(), (REPO / "pyproject.toml").read_bytes()):
        digest.update(part)
    key = f"{sdk_version}-{digest.hexdigest()[:16]}"
    stamp = VENV / ".sdk-suite-stamp"
    if stamp.exists() and stamp.read_text() == key:
        return key
    if not VENV_PY.exists():
        log(
            f"creating {VENV.relative_to(REPO)} with {getattr(sys, '_base_executable', sys.executable)}"
        )
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    log("installing the SDK (from its sdist), its test dependencies and agents-watchdog")
    pip = [str(VENV_PY), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, str(archive), "-r", str(REQUIREMENTS), "-e", str(REPO)], check=True)
    stamp.write_text(key)
    return key


def uncollectable(source: Path, key: str) -> dict[str, str]:
    """Test files that fail to import here (optional extras not installed, files the
    sdist leaves out); both runs skip them. Cached per installed set."""
    cache = WORK / f"collect-errors-{key}.json"
    if cache.exists():
        cached: dict[str, str] = json.loads(cache.read_text())
        return cached
    log("collecting the suite once to find test files that cannot be imported here")
    result = subprocess.run(
        [str(VENV_PY), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["--continue-on-collection-errors", "-rE"],
        cwd=source,
        capture_output=True,
        text=True,
        env=suite_env(attached=False),
    )
    errors = report.collection_errors(result.stdout)
    cache.write_text(json.dumps(errors, indent=1))
    return errors


def suite_env(attached: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTS_WATCHDOG_", "PYTEST_"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if attached:
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(SNAPSHOT)])
    return env


def phases(source: Path, workers: int, selection: list[str]) -> list[tuple[str, list[str]]]:
    """The pytest invocations of one run: ``parallel`` (not serial) and ``serial``."""
    if selection:
        spread = ["-n", str(workers), "--dist", "worksteal"] if workers > 1 else []
        return [("selected", [*spread, *selection])]
    serial_files = sorted(
        str(path.relative_to(source))
        for path in (source / "tests").rglob("test_*.py")
        if "pytest.mark.serial" in path.read_text(encoding="utf-8", errors="replace")
    )
    spread = ["-n", str(workers), "--dist", "worksteal"] if workers > 1 else []
    return [
        ("parallel", [*spread, "-m", "not serial"]),
        ("serial", ["-m", "serial", *serial_files]),
    ]


# Phases whose pytest run broke (internal error, usage error, interrupted).
broken: list[str] = []


def run_suite(
    mode: str,
    attached: bool,
    source: Path,
    plan: list[tuple[str, list[str]]],
    ignores: list[str],
    out: Path,
) -> dict[str, float]:
    """Run every phase of ``plan``, watched when ``attached``; results go to ``out/mode``.
    Returns each phase's wall-clock seconds."""
    run_dir = out / mode
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    timings: dict[str, float] = {}
    for phase, args in plan:
        # The SDK's own pytest config, whatever paths appear in the arguments: pytest
        # guesses its rootdir from them, and ours lie inside this project (whose
        # pyproject.toml has a pytest config of its own).
        command = [str(VENV_PY), "-m", "pytest", "-c", str(source / "pyproject.toml")]
        command += [f"--rootdir={source}", *PYTEST_COMMON, *ignores, *args]
        command += [f"--junitxml={run_dir / f'{phase}.xml'}"]
        if attached:
            config = run_dir / "sidecar.toml"
            config.write_text(SIDECAR_CONFIG, encoding="utf-8")
            records = run_dir / phase
            # The "=" forms: before the plugin is loaded pytest does not know these
            # options, and would take a separate value for a test path.
            command += ["-p", "watchdog_attach", f"--watchdog-out={records}"]
            command += [f"--watchdog-config={config}"]
        log(f"{mode}/{phase}: {' '.join(command[3:])}")
        started = time.monotonic()
        with (run_dir / f"{phase}.log").open("w", encoding="utf-8") as output:
            code = subprocess.run(
                command,
                cwd=source,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=suite_env(attached),
            ).returncode
        timings[phase] = round(time.monotonic() - started, 1)
        if code not in (0, 1) or not (run_dir / f"{phase}.xml").exists():
            # 2 interrupted, 3 internal error, 4 usage error, 5 nothing collected: the
            # run itself broke, and comparing its outcomes would only report that.
            broken.append(f"{mode}/{phase} (pytest exit {code}, see {run_dir / phase}.log)")
        tail = (run_dir / f"{phase}.log").read_text(encoding="utf-8").strip().splitlines()[-1:]
        log(f"{mode}/{phase}: exit {code} in {timings[phase]} s: {' '.join(tail)}")
    (run_dir / "timings.json").write_text(json.dumps(timings))
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (2)")
    parser.add_argument("--out", type=Path, default=WORK / "report")
    parser.add_argument(
        "--reuse-baseline", action="store_true", help="keep the last baseline run if there is one"
    )
    parser.add_argument("--no-rerun", action="store_true", help="do not rerun changed tests")
    parser.add_argument(
        "--only", choices=("baseline", "attached"), help="run one mode (no report without both)"
    )
    parser.add_argument(
        "--watchdog-ref",
        metavar="REF",
        help="test agents-watchdog as committed at REF (default: the working tree)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="report on the last runs again, run nothing"
    )
    parser.add_argument("selection", nargs="*", help="test paths or ids (default: the whole suite)")
    options = parser.parse_args()

    sdk_version = version("openai-agents")
    source = sdk_source(sdk_version)
    key = ensure_venv(sdk_version, WORK / "sdist" / f"openai_agents-{sdk_version}.tar.gz")
    skipped_files = uncollectable(source, key) | UNSAFE
    ignores = [f"--ignore={path}" for path in sorted(skipped_files)]
    plan = phases(source, options.workers, options.selection)
    out: Path = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    timings = {}
    if options.report_only:
        for mode in ("baseline", "attached"):
            timings[mode] = json.loads((out / mode / "timings.json").read_text())
        watched = (out / "attached" / "watched.txt").read_text()
        return report_on(out, plan, sdk_version, watched, skipped_files, timings, options)

    baseline_done = (out / "baseline" / "timings.json").exists()
    if options.only == "attached" or (options.reuse_baseline and baseline_done):
        log("reusing the last baseline run")
        timings["baseline"] = json.loads((out / "baseline" / "timings.json").read_text())
    else:
        timings["baseline"] = run_suite("baseline", False, source, plan, ignores, out)
    if options.only == "baseline":
        return 0
    watched = snapshot_watchdog(options.watchdog_ref)
    log(f"agents-watchdog under test: {watched}")
    timings["attached"] = run_suite("attached", True, source, plan, ignores, out)
    (out / "attached" / "watched.txt").write_text(watched)

    if broken:
        log("a pytest run broke, so there is nothing to compare: " + "; ".join(broken))
        return 2
    rerun = None
    if not options.no_rerun:

        def rerun(ids: list[str]) -> None:
            log(f"rerunning the {len(ids)} test(s) whose outcome changed, in both modes")
            run_suite("rerun-baseline", False, source, [("rerun", ids)], ignores, out)
            run_suite("rerun-attached", True, source, [("rerun", ids)], ignores, out)

    return report_on(out, plan, sdk_version, watched, skipped_files, timings, options, rerun)


def report_on(
    out: Path,
    plan: list[tuple[str, list[str]]],
    sdk_version: str,
    watched: str,
    skipped_files: dict[str, str],
    timings: dict[str, dict[str, float]],
    options: argparse.Namespace,
    rerun: Callable[[list[str]], None] | None = None,
) -> int:
    """Analyse the runs in ``out`` (rerunning changed tests when ``rerun`` is given),
    write report.txt and findings.json, print the report; returns the exit status."""
    findings = report.analyse(out, [phase for phase, _ in plan])
    if len(findings.changes) > MAX_RERUN:
        log(f"{len(findings.changes)} outcomes changed: too many to rerun one by one")
    elif findings.changes and rerun is not None:
        rerun(sorted(findings.changes))
        findings.add_reruns(out)
    elif findings.changes and (out / "rerun-attached" / "rerun.xml").exists():
        findings.add_reruns(out)
    text = report.render(findings, sdk_version, watched, skipped_files, timings, options.workers)
    (out / "report.txt").write_text(text, encoding="utf-8")
    (out / "findings.json").write_text(json.dumps(findings.as_json(), indent=1, default=str))
    print(text)
    log(f"report: {out / 'report.txt'}")
    return 1 if findings.failing() else 0


if __name__ == "__main__":
    sys.exit(main())
