"""The built wheel installs beside the filesystem library ``watchdog`` and both work;
the distributions carry their licence and metadata; the docs they ship hold together.

Both distributions put files under the import name ``watchdog``. Ours is a PEP 420
namespace portion (no ``__init__.py``) with module names the other does not use, so
either can be installed, used and uninstalled without breaking the other.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import tomllib
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parent.parent
THEIRS = {
    "__init__.py",
    "__main__.py",
    "events.py",
    "py.typed",
    "observers",
    "tricks",
    "utils",
    "version.py",
    "watchmedo.py",
}

pytestmark = pytest.mark.slow


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    if result.returncode != 0:
        raise AssertionError(f"{command} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    out = tmp_path_factory.mktemp("wheels")
    try:
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, REPO)
        run(
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--only-binary=:all:",
            "-d",
            out,
            "watchdog",
        )
    except AssertionError as exc:
        if IN_CI:
            raise
        pytest.skip(f"cannot build or download wheels here (offline?): {exc}")
    ours = next(out.glob("agents_watchdog-*.whl"))
    theirs = next(p for p in out.glob("watchdog-*.whl"))
    yield ours, theirs


def test_wheel_ships_no_names_the_other_library_uses(wheels: tuple[Path, Path]) -> None:
    ours, _ = wheels
    names = zipfile.ZipFile(ours).namelist()
    top = {n.split("/")[1] for n in names if n.startswith("watchdog/")}
    assert top & THEIRS == set()
    assert {"processor.py", "protocol.py", "sidecar", "cli.py"} <= top
    assert not any(n.startswith("watchdog/tests") for n in names)
    # The live page's files ship inside the package: the sidecar serves them itself.
    page = {f"watchdog/sidecar/static/{f}" for f in ("index.html", "page.js", "page.css")}
    assert page <= set(names)


CHECK = textwrap.dedent("""
    import sys, tempfile, threading, pathlib, time
    results = {}
    if "fs" in sys.argv:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.version import VERSION_STRING
        seen = threading.Event()
        class Handler(FileSystemEventHandler):
            def on_created(self, event):
                if event.src_path.endswith("hello.txt"):
                    seen.set()
        folder = tempfile.mkdtemp()
        observer = Observer()
        observer.schedule(Handler(), folder)
        observer.start()
        pathlib.Path(folder, "hello.txt").write_text("hi")
        assert seen.wait(10), "filesystem watchdog saw no event"
        observer.stop(); observer.join()
        print("fs ok", VERSION_STRING)
    if "agents" in sys.argv:
        import httpx
        from agents import trace, custom_span
        from watchdog.processor import install, WatchdogProcessor
        from watchdog._sidecar_process import SidecarProcess
        import watchdog.processor
        assert sys.prefix in watchdog.processor.__file__, watchdog.processor.__file__
        with SidecarProcess() as sidecar:
            processor = install(url=sidecar.url, service="coexist", replace_default=True)
            with trace("wf"), custom_span("inside"):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    names = [s["name"] for s in httpx.get(sidecar.url + "/v1/spans").json()["spans"]]
                    if "inside" in names:
                        break
                    time.sleep(0.05)
                assert "inside" in names, names
            processor.shutdown()
        print("agents ok")
""")


def make_env(tmp: Path, name: str) -> Path:
    env = tmp / name
    run(sys.executable, "-m", "venv", "--without-pip", env)
    python = env / "bin" / "python"
    site = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    # Dependencies come from the test environment, appended after the env's own packages
    # (a path line in a .pth file: that directory's own .pth files are not processed).
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip(python: Path, *args: str | Path) -> None:
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "--quiet",
        "--disable-pip-version-check",
        *args,
    )


@pytest.mark.parametrize("order", ["ours-first", "theirs-first"])
def test_both_install_import_and_work_together(
    wheels: tuple[Path, Path], tmp_path: Path, order: str
) -> None:
    ours, theirs = wheels
    python = make_env(tmp_path, order)
    first, second = (ours, theirs) if order == "ours-first" else (theirs, ours)
    pip(python, "install", "--no-deps", first)
    pip(python, "install", "--no-deps", second)
    out = run(python, "-c", CHECK, "fs", "agents", cwd=tmp_path)
    assert "fs ok" in out and "agents ok" in out
    # Removing either leaves the other whole.
    if order == "ours-first":
        pip(python, "uninstall", "--yes", "agents-watchdog")
        assert "fs ok" in run(python, "-c", CHECK, "fs", cwd=tmp_path)
    else:
        pip(python, "uninstall", "--yes", "watchdog")
        assert "agents ok" in run(python, "-c", CHECK, "agents", cwd=tmp_path)


def metadata(wheel: Path) -> Message:
    """The core metadata (METADATA) of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def licence_of(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
        return archive.read(name).decode()


def newer_pythons() -> set[str]:
    """The Python versions after 3.11 whose tests ``make test`` runs (the Makefile's list)."""
    match = re.search(r"^NEWER_PYTHONS\s*:=\s*(.+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, "Makefile: NEWER_PYTHONS not found"
    return set(match.group(1).split())


def test_the_wheel_carries_the_licence_classifiers_and_urls(wheels: tuple[Path, Path]) -> None:
    ours, _ = wheels
    licence = licence_of(ours)
    assert licence.startswith("MIT License")
    assert "Copyright (c) 2026 the agents-watchdog authors" in licence
    meta = metadata(ours)
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = set(meta.get_all("Classifier") or [])
    assert {
        "Framework :: AsyncIO",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Monitoring",
        "Programming Language :: Python :: 3 :: Only",
    } <= classifiers
    # The versions claimed are exactly those `make test` (and so CI) runs.
    claimed = {
        c.rsplit(" ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert claimed == {"3.11"} | newer_pythons()
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(
        u.startswith("https://github.com/agents-watchdog/agents-watchdog") for u in urls.values()
    )
    # Development tools are dependency groups: none is published as an extra.
    assert meta.get_all("Provides-Extra") is None


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    try:
        run(sys.executable, "-m", "build", "--sdist", "--outdir", out, REPO)
    except AssertionError as exc:
        if IN_CI:
            raise
        pytest.skip(f"cannot build the sdist here (offline?): {exc}")
    return next(out.glob("agents_watchdog-*.tar.gz"))


def test_the_sdist_ships_the_licence_and_docs_and_builds_a_whole_wheel(
    sdist: Path, tmp_path: Path
) -> None:
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
        archive.extractall(tmp_path, filter="data")
    assert {"LICENSE", "README.md", "CHANGELOG.md", "SECURITY.md", "pyproject.toml"} <= names
    assert {p.relative_to(REPO).as_posix() for p in (REPO / "docs").iterdir()} <= names
    assert "watchdog/processor.py" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "bench/", ".venv"))]
    # A wheel built from the sdist alone, as pip does from an index, is as complete.
    source = next(tmp_path.glob("agents_watchdog-*"))
    out = tmp_path / "wheel"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, source)
    wheel = next(out.glob("agents_watchdog-*.whl"))
    assert "Copyright (c) 2026 the agents-watchdog authors" in licence_of(wheel)
    assert {"Framework :: AsyncIO"} <= set(metadata(wheel).get_all("Classifier") or [])


def test_dev_tools_are_dependency_groups_and_the_test_group_runs_the_asyncio_tests() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "optional-dependencies" not in project["project"]
    groups = project["dependency-groups"]
    assert {"include-group": "test"} in groups["dev"]

    def names(requirements: list[object]) -> set[str]:
        return {
            re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] for r in requirements if isinstance(r, str)
        }

    # pytest's settings (timeout, -n) and the py-spy test need these on every Python.
    assert {"pytest", "pytest-timeout", "pytest-xdist", "py-spy"} <= names(groups["test"])
    assert {"ruff", "mypy", "playwright", "build"} <= names(groups["dev"])
    makefile = (REPO / "Makefile").read_text()
    assert "--group dev" in makefile and "--group test" in makefile
    listed = re.search(r"^ASYNCIO_TESTS\s*:=\s*((?:.*\\\n)*.*)$", makefile, re.M)
    assert listed, "Makefile: ASYNCIO_TESTS not found"
    files = listed.group(1).replace("\\\n", " ").split()
    assert len(files) >= 10
    assert [f for f in files if not (REPO / f).is_file()] == []


def make(*args: str, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "MAKEFLAGS", "MAKELEVEL"}}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_test_fetches_tools_and_runs_the_newer_pythons() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    planned = make("-n", "test", ci=False).stdout
    assert (
        "scripts/fetch-tools.sh --best-effort"
        in make("-n", "-W", "scripts/fetch-tools.sh", ".tools/.fetched-stamp", ci=False).stdout
    )
    # Under CI a tool that cannot be fetched stops the run before the suite.
    strict = make("-n", "-W", "scripts/fetch-tools.sh", ".tools/.fetched-stamp", ci=True).stdout
    assert "fetch-tools.sh" in strict and "--best-effort" not in strict
    assert "pytest -n 3" in planned
    # A Python the machine lacks: a note locally, a failure under CI.
    local = make("test-newer-3.99", ci=False)
    assert local.returncode == 0 and "Python 3.99 not found" in local.stdout, local
    ci = make("test-newer-3.99", ci=True)
    assert ci.returncode != 0 and "Python 3.99 not found" in ci.stderr, ci


def test_ci_runs_the_readmes_test_command_and_nothing_around_it() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert re.search(r"^make test\b", first_block, re.M)
    commands = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "make test"
    assert [c for c in commands if c.startswith(("make", "scripts/", "python", "pip"))] == [
        "make test"
    ]


def test_fetch_tools_says_what_it_cannot_fetch_and_goes_on_only_when_asked(
    tmp_path: Path,
) -> None:
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "fetch-tools.sh"
    shutil.copy(REPO / "scripts" / "fetch-tools.sh", script)
    # A machine without apt-get or dpkg: only the commands the script itself needs.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "basename", "id", "mkdir", "rm", "ls", "touch", "tr"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}

    def fetch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60
        )

    lenient = fetch("--best-effort")
    assert lenient.returncode == 0, lenient
    assert "not a Debian-based machine" in lenient.stderr
    assert "missing: prometheus-alertmanager amtool promtool" in lenient.stderr
    assert not (tmp_path / ".tools" / ".fetched-stamp").exists()  # tried again next time
    strict = fetch()
    assert strict.returncode == 1 and "missing:" in strict.stderr, strict


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def unfenced(markdown: str) -> str:
    """The Markdown without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)


def outside_code(markdown: str) -> str:
    """The Markdown without its code: fenced blocks and inline spans."""
    return re.sub(r"`[^`\n]*`", "", unfenced(markdown))


def anchors(markdown: str) -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", unfenced(markdown), re.M)}


def test_readme_and_docs_links_lead_somewhere() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", outside_code(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == []
    # The README links every page of docs/.
    readme = (REPO / "README.md").read_text()
    assert [p.name for p in (REPO / "docs").glob("*.md") if f"(docs/{p.name})" not in readme] == []
