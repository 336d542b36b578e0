"""The wheels the GPU machine's image lacks, for CPython 3.12 on x86-64 Linux, in one folder.

    python benchmarks/device_wheels.py             # -> .whl/  (`make device-wheels`)

The roots are the onedl MMSeg line at pyproject.toml's pins. Their requirements are followed
(markers evaluated for CPython 3.12 on Linux, extras left out) and every one the image
already holds (benchmarks/device_image.txt) is left out. A version is pyproject.toml's pin
where it has one, else the one installed in the environment running this script (the one
`make install` resolved from pyproject.toml). onedl-mmcv and onedl-mmsegmentation publish
sdists only: they are built here into pure-Python wheels (no compiled ops). Our own package
is built as a wheel too. The folder ends with exactly one wheel per name; the total size is
printed (it travels with the working tree to the device, 64 MiB at most).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]
IMAGE_LIST = REPO / "benchmarks" / "device_image.txt"
ROOTS = ("onedl-mmengine", "onedl-mmcv", "onedl-mmsegmentation")
TARGET = ["--python-version", "3.12", "--implementation", "cp",
          *[arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                            "manylinux2014_x86_64") for arg in ("--platform", tag)]]
# The environment of the device's python3, for requirement markers.
MARKERS = dict(python_version="3.12", python_full_version="3.12.3", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython",
               extra="")
# A requirement the image meets under another name: its headless OpenCV provides the same
# cv2 module without the GUI libraries.
MET_AS = {"opencv-python": "opencv-python-headless"}


class WheelError(RuntimeError):
    """A wheel that cannot be had for the device; the message names the package."""


def image_packages(path: Path = IMAGE_LIST) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {canonicalize_name(line) for line in lines if line}


def pinned(pyproject: Path = REPO / "pyproject.toml") -> dict[str, str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {canonicalize_name(r.name): str(r.specifier).removeprefix("==")
            for r in map(Requirement, deps)}


def requirements(wheel: Path) -> list[Requirement]:
    """The requirements a wheel declares that apply on the device, extras left out."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    found = [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
             if line.startswith("Requires-Dist:")]
    return [r for r in found if r.marker is None or r.marker.evaluate(MARKERS)]


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def fetch(name: str, ver: str, dest: Path, scratch: Path) -> Path:
    """``name==ver`` as a wheel for the device in ``dest``: downloaded, else built from its
    sdist here, which must give a pure-Python wheel."""
    before = set(dest.iterdir())
    got = pip("download", "--quiet", "--no-deps", "--only-binary=:all:", *TARGET, "-d",
              str(dest), f"{name}=={ver}")
    if got.returncode != 0:
        sdists = scratch / name
        got = pip("download", "--quiet", "--no-deps", "--no-binary=:all:", "-d", str(sdists),
                  f"{name}=={ver}")
        if got.returncode != 0:
            raise WheelError(f"{name}=={ver}: neither a wheel for CPython 3.12 nor an sdist "
                             f"({got.stderr.strip().splitlines()[-1:]})")
        (sdist,) = sdists.iterdir()
        got = pip("wheel", "--quiet", "--no-deps", "-w", str(dest), str(sdist))
        if got.returncode != 0:
            raise WheelError(f"{name}=={ver}: its sdist did not build "
                             f"({got.stderr.strip().splitlines()[-1:]})")
        (wheel,) = set(dest.iterdir()) - before
        # built by this Python, not the device's: only a pure-Python wheel carries over
        if any(tag.platform != "any" for tag in parse_wheel_filename(wheel.name)[3]):
            raise WheelError(f"{wheel.name}: built with compiled parts here; the device "
                             "needs them built for CPython 3.12")
        return wheel
    (wheel,) = set(dest.iterdir()) - before
    return wheel


def source_copy(scratch: Path) -> Path:
    """The package's sources alone: setuptools builds in the source tree, and a build/ folder
    left in the checkout would travel to the device and could put stale files in a wheel."""
    root = scratch / "internseg"
    shutil.copytree(REPO / "core", root / "core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    return root


def collect(dest: Path, image: set[str] | None = None,
            pins: dict[str, str] | None = None) -> list[Path]:
    """Fill ``dest`` with the wheels and nothing else; returns them."""
    image = image_packages() if image is None else image
    pins = pinned() if pins is None else pins
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fresh, scratch = Path(tmp) / "wheels", Path(tmp) / "sdists"
        fresh.mkdir()
        pending, seen, wheels = list(ROOTS), set(), []
        while pending:
            name = canonicalize_name(pending.pop(0))
            if name in seen:
                continue
            seen.add(name)
            try:
                ver = pins.get(name) or version(name)
            except PackageNotFoundError:
                raise WheelError(f"{name}: required on the device, not in the image, and "
                                 "neither pinned in pyproject.toml nor installed here") from None
            wheel = fetch(name, ver, fresh, scratch)
            wheels.append(wheel)
            for req in requirements(wheel):
                needed = canonicalize_name(req.name)
                if MET_AS.get(needed, needed) not in image:
                    pending.append(needed)
        got = pip("wheel", "--quiet", "--no-deps", "-w", str(fresh), str(source_copy(scratch)))
        if got.returncode != 0:
            raise WheelError(f"internseg: the package did not build ({got.stderr[-300:]})")
        wheels.append(next(fresh.glob("internseg-*.whl")))
        for old in dest.glob("*.whl"):
            old.unlink()
        return [Path(shutil.move(str(w), dest / w.name)) for w in wheels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".whl")
    args = parser.parse_args()
    wheels = collect(args.dest)
    for wheel in sorted(wheels):
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    total = sum(w.stat().st_size for w in wheels)
    print(f"{total / 2**20:7.2f} MiB  in {len(wheels)} wheels, {args.dest}")


if __name__ == "__main__":
    main()
