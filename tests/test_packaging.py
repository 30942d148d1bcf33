"""The built wheel installs beside the filesystem library ``watchdog`` and both work.

Both distributions put files under the import name ``watchdog``. Ours is a PEP 420
namespace portion (no ``__init__.py``) with module names the other does not use, so
either can be installed, used and uninstalled without breaking the other.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parent.parent
THEIRS = {
    "__init__.py",
    "__main__.py",
    "events.py",
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
        from watchdog.sidecar.launcher import SidecarProcess
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
