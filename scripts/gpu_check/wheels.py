"""The carried-wheel bundle: what instructkit needs minus what the GPU machine has; download here, install there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .context import write_json

DEVICE_PROVIDED = {
    "torch",
    "numpy",
    "pyarrow",
    "triton",
    "sympy",
    "mpmath",
    "networkx",
    "setuptools",
    "matplotlib",
    "pip",
    "instructkit",
}
MARKER_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_pins(root: str = "instructkit") -> dict[str, str]:
    """instructkit's runtime dependency closure, at the versions installed here, minus what the device has."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    todo = [root]
    while todo:
        dist = metadata.distribution(todo.pop())
        for spec in dist.requires or []:
            req = Requirement(spec)
            name = _norm(req.name)
            if name in pins or name in DEVICE_PROVIDED or name.startswith("nvidia-"):
                continue
            if req.marker and not req.marker.evaluate(MARKER_ENV):
                continue
            try:
                pins[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue  # not needed on this platform's install either
            todo.append(name)
    return dict(sorted(pins.items()))


def download_wheels(dest: Path, python_version: str, limit_mib: float) -> int:
    """pip download the pinned closure as Python `python_version` manylinux/pure wheels into `dest`."""
    pins = wheel_pins()
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
        "-d",
        str(dest),
    ]
    cmd += [f"{name}=={version}" for name, version in pins.items()]
    code = subprocess.call(cmd)
    size = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20
    print(f"{len(list(dest.glob('*.whl')))} wheels, {size:.1f} MiB in {dest} (limit {limit_mib} MiB)")
    if size > limit_mib:
        print("too big to carry: drop some pins or raise the limit", file=sys.stderr)
        return 1
    return code


def _version_key(version: str):
    try:
        from packaging.version import Version

        return Version(version)
    except Exception:
        return tuple(int(x) for x in re.findall(r"\d+", version))


def _compatible(filename: str) -> bool:
    """Whether this interpreter can use the wheel (a cp312 wheel is never unpacked into Python 3.11)."""
    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename
    except ImportError:
        return True
    return bool(set(parse_wheel_filename(filename)[3]) & set(sys_tags()))


def install_wheels(folder: Path, target: Path) -> list[dict]:
    """Install each carried wheel whose distribution is missing here or older, into `target` (no index, no deps)."""
    from importlib import metadata

    chosen, manifest = [], []
    for wheel in sorted(folder.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        install = _compatible(wheel.name) and (have is None or _version_key(have) < _version_key(version))
        manifest.append({"name": name, "carried": version, "device": have, "installed": install})
        if install:
            chosen.append(str(wheel))
    target.mkdir(parents=True, exist_ok=True)
    if chosen:
        _pip_or_unzip(chosen, target)
    write_json(target / "manifest.json", manifest)
    return manifest


def _pip_or_unzip(wheels: list[str], target: Path) -> None:
    """pip install --target (no index, no deps); where pip is missing or fails, unpack the wheels instead."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--disable-pip-version-check",
        "--target",
        str(target),
        *wheels,
    ]
    if subprocess.call(cmd) == 0:
        return
    print("pip install failed; unpacking the wheels into the target instead", file=sys.stderr)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)
    for data in target.glob("*.data"):
        for sub in ("purelib", "platlib"):
            for item in (data / sub).glob("*") if (data / sub).is_dir() else []:
                shutil.move(str(item), str(target / item.name))
        shutil.rmtree(data)
