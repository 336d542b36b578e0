"""The wheels carried to the GPU machine (`make device-wheels`) and the device command
(benchmarks/device_check.sh), tested here as far as a CPU with Python 3.11 allows.

The wheels come from PyPI, once per session. The device's image is stood in for by a folder
of links to this environment's copies of the packages the image holds
(benchmarks/device_image.txt), torch (CPU) among them; a fresh virtual environment sees that
folder and the wheels, nothing else. What cannot be exercised here: CPython 3.12 itself, the
image's own versions (torch 2.11 with CUDA, numpy 2.5), and every GPU-only path.
"""

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import device_wheels  # noqa: E402

pytestmark = pytest.mark.device_wheels


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> list[Path]:
    return device_wheels.collect(tmp_path_factory.mktemp("whl"))


def by_name(wheels) -> dict[str, Path]:
    return {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in wheels}


def test_one_wheel_per_package_at_the_pinned_versions_and_none_the_image_has(wheels):
    names = by_name(wheels)
    assert len(names) == len(wheels) == len(list(wheels[0].parent.glob("*.whl")))
    pins = {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, tomllib.loads(
        (REPO / "pyproject.toml").read_text())["project"]["dependencies"])}
    for root in device_wheels.ROOTS:
        assert f"=={parse_wheel_filename(names[root].name)[1]}" == pins[root]
    assert not set(names) & device_wheels.image_packages()
    assert sum(w.stat().st_size for w in wheels) < 16 * 2**20
    with zipfile.ZipFile(names["internseg"]) as zf:
        assert "internseg/configs/paper/head_tuning.py" in zf.namelist()


def test_every_wheel_installs_on_cpython_312_for_x86_64_linux(wheels, tmp_path):
    """pip's own tag and Requires-Python checks for the device's interpreter, from the
    folder alone; internseg declares the project's 3.11, which the device command overrides
    (--ignore-requires-python), as this does for it alone."""
    pinned = {name: f"{name}=={parse_wheel_filename(w.name)[1]}"
              for name, w in by_name(wheels).items()}
    ours = pinned.pop("internseg")
    for requirements, extra in ((list(pinned.values()), []), ([ours], ["--ignore-requires-python"])):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-index", "--find-links", str(wheels[0].parent),
                        "--only-binary=:all:", *device_wheels.TARGET, *extra,
                        "-d", str(tmp_path / "got"), *requirements], check=True, timeout=120)
    assert len(list((tmp_path / "got").iterdir())) == len(wheels)


def image_folder(folder: Path) -> Path:
    """Links to this environment's installed copies of the image's packages."""
    image = device_wheels.image_packages()
    folder.mkdir()
    for dist in distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if device_wheels.MET_AS.get(name, name) not in image:
            continue
        site = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in tops:
            if (site / top).exists() and not (folder / top).exists():
                (folder / top).symlink_to(site / top)
    return folder


def test_the_device_command_runs_the_check_from_the_wheels_alone(wheels, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "image.pth").write_text(f"{image_folder(tmp_path / 'image')}\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHON=str(python), SITE=str(tmp_path / "site"), OUT=str(out),
               WHEELS=str(wheels[0].parent))
    done = subprocess.run(["bash", str(REPO / "benchmarks/device_check.sh"), "--tiny",
                           "--iters", "1", "--img-size", "56"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["failed"] == [] and report["tiny"] is True
    assert report["versions"]["onedl-mmsegmentation"] == "1.4.2"
    assert (out / "gpu_check.md").is_file() and (out / "gpu_check.log").is_file()
    # the installed package is the wheel's, not this checkout's
    where = subprocess.run([python, "-c", "import internseg; print(internseg.__file__)"],
                           capture_output=True, text=True, check=True,
                           env={**env, "PYTHONPATH": str(tmp_path / "site")}).stdout
    assert where.startswith(str(tmp_path / "site"))

    # a wheel of other code than the checkout's is refused before anything runs
    stale = tmp_path / "stale"
    stale.mkdir()
    ours = by_name(wheels)["internseg"]
    with zipfile.ZipFile(ours) as src, zipfile.ZipFile(stale / ours.name, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"# edited\n" if item.filename == "internseg/plan/runs.py"
                         else data)
    done = subprocess.run(["bash", str(REPO / "benchmarks/device_check.sh"), "--tiny"],
                          capture_output=True, text=True, timeout=120,
                          env={**env, "WHEELS": str(stale)})
    assert done.returncode == 1
    assert "core/internseg/plan/runs.py" in done.stderr and "make device-wheels" in done.stderr
