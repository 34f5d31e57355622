"""`pip install .` / a wheel: the chat page and configs/ (quickstart default, QC configs, prices) are
package data found through importlib.resources; the wheel installed into a fresh venv runs
`allava --help` and `allava serve --help` from outside the source tree."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["configs/quickstart.yaml", "configs/qc/default.yaml", "configs/qc/cheap.yaml", "configs/prices.yaml",
           "serve/static/index.html", "serve/static/app.js", "serve/static/style.css"]


def test_package_data_is_found_through_importlib_resources():
    from importlib.resources import files

    from allava.config import SHIPPED_CONFIGS
    from allava.quality.cli import DEFAULT_CONFIG as QC_DEFAULT
    from allava.studies.config import DEFAULT_CONFIG as QUICKSTART
    from allava.synth.budget import default_prices_path

    for rel in SHIPPED:
        assert (files("allava") / rel).is_file(), rel
    assert QUICKSTART == SHIPPED_CONFIGS / "quickstart.yaml" and QUICKSTART.is_file() and QC_DEFAULT.is_file()
    assert default_prices_path() is not None
    # the link keeps one configs/ folder: the repository's (others edit it in place)
    assert (ROOT / "src/allava/configs").resolve() == (ROOT / "configs").resolve()


@pytest.mark.slow
def test_the_wheel_in_a_fresh_venv_runs_the_cli(tmp_path):
    import importlib.util

    dist = tmp_path / "dist"
    # the installed setuptools when there is one (no download); else pip fetches it into an isolated build
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                            "-w", str(dist), str(ROOT)], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(dist.glob("allava-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in SHIPPED:
        assert f"allava/{rel}" in names, rel

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--ignore-installed",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=300, env=env)
    assert inst.returncode == 0, inst.stderr[-2000:]
    assert any(Path(site).glob("allava/serve/static/index.html"))
    # then torch & co. from this environment's site-packages (a plain path entry, after the venv's own:
    # its .pth files, among them the editable install of allava, are not run), allava only from the wheel
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = tmp_path / "elsewhere"
    where.mkdir()
    check = subprocess.run([str(py), "-c", (
        "import allava, sys; from pathlib import Path; from allava.config import SHIPPED_CONFIGS; "
        "from allava.serve.app import static_file; from allava.synth.budget import default_prices_path; "
        "from allava.studies.config import load_quickstart_config; "
        "assert Path(allava.__file__).is_relative_to(Path(sys.prefix)), allava.__file__; "
        "assert b'<html' in static_file('index.html'); load_quickstart_config(); "
        "assert default_prices_path().is_relative_to(Path(sys.prefix)); print(SHIPPED_CONFIGS)")],
        cwd=where, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.strip().startswith(str(venv))
    for argv in (["--help"], ["serve", "--help"]):
        r = subprocess.run([str(venv / "bin" / "allava"), *argv], cwd=where, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0 and "usage: allava" in r.stdout, r.stderr[-2000:]
    assert "--max-batch-size" in r.stdout
