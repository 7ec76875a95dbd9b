"""The package as a user gets it: a wheel, installed into a fresh venv, run from an empty folder.

The wheel is built from a copy of the repository's files (`pip wheel --no-deps`), installed with
--no-deps into a new venv whose dependencies (torch, transformers, optuna, mlflow ...) are those
of the interpreter running the tests, reached through a path file, so nothing is downloaded and
torch stays the one `pip install torch==2.13.0` put there. The source tree is kept off the path:
the installed rys_search must find its probe suites and default study config inside itself.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def copy_of_the_repository(to: Path) -> Path:
    """The working tree less what git ignores (or a plain copy without git), symlinks kept as links."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True)
    names = [n for n in listed.stdout.decode().split("\0") if n] if listed.returncode == 0 else None
    if not names:
        shutil.copytree(ROOT, to, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", "build", "*.egg-info", "__pycache__", "mlruns", "*.db", ".pytest_cache"))
        return to
    for name in names:
        source, target = ROOT / name, to / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    return to


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's bin folder, the wheel's file names, seconds to build and install)."""
    start = time.perf_counter()
    tmp = tmp_path_factory.mktemp("wheel")
    source = copy_of_the_repository(tmp / "source")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp / "dist").glob("rys_search-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # plain path entries: the dependencies, not the .pth files (an editable rys_search) beside them
    (Path(site) / "dependencies-of-the-test-run.pth").write_text("\n".join(sorted(ours)) + "\n")
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return env_dir / "bin", zipfile.ZipFile(wheel).namelist(), time.perf_counter() - start


def user_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "RYS_SEARCH_CACHE": str(tmp / "cache"), "TQDM_DISABLE": "1"}


def test_the_wheel_holds_every_suite_file_and_the_default_config(installed):
    _, names, _ = installed
    shipped = {n.removeprefix("rys_search/") for n in names}
    suites = {f"objectives/{p.name}" for p in (ROOT / "objectives").iterdir() if p.is_file()}
    assert suites <= shipped  # every file, whatever its name: a new suite ships without a packaging change
    assert "studies/default.toml" in shipped


def test_the_installed_tool_runs_from_an_empty_folder(installed, saved_tiny, tmp_path):
    bin_dir, _, setup_seconds = installed
    model = saved_tiny("llama")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = user_env(tmp_path)
    where = subprocess.run([str(bin_dir / "python"), "-c", "import rys_search; print(rys_search.__file__)"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(bin_dir.parent)), where  # the installed copy, not the source tree

    start = time.perf_counter()
    ev = subprocess.run([str(bin_dir / "rys-search"), "eval", "--model", model, "--objectives",
                         "math,eq,reasoning,fixed_point", "--limit", "2", "--rys", "2,4", "--json"],
                        cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "math" in ev.stdout and "fixed_point" in ev.stdout
    run = subprocess.run([str(bin_dir / "rys-search"), "run", "--model", model, "--trials", "2", "--limit", "2", "--no-confirm"],
                         cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "study default: 2/2 finished trials" in run.stdout
    assert (empty / "studies" / "default.db").is_file() and (empty / "mlruns" / "mlflow.db").is_file()
    print(f"\nwheel built and installed in {setup_seconds:.1f} s; eval and run --trials 2 in "
          f"{time.perf_counter() - start:.1f} s")
