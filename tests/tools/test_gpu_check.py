"""scripts/gpu_check (a package: one module per section, runner, report, wheels): its CPU mode runs every
section through the package's real code paths (so the GPU check cannot rot between GPU runs), a failing or
overrunning section is recorded while the report is still written, and the carried-wheel helpers pick
exactly what the GPU machine lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers.paths import REPO

SCRIPT = REPO / "scripts" / "gpu_check"  # a package folder: `python scripts/gpu_check run ...`
sys.path.insert(0, str(SCRIPT.parent))
import gpu_check  # noqa: E402


def _run(args: list[str], tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    environ = {**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **env}
    proc = subprocess.run(args, cwd=REPO, env=environ, capture_output=True, text=True, timeout=400)
    results = out / "results.json"
    assert results.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, json.loads(results.read_text())


def _cases(summary: dict, section: str) -> dict[str, dict]:
    record = next(s for s in summary["sections"] if s["section"] == section)
    return {c["case"]: c for c in record["cases"]}


@pytest.mark.slow
def test_cpu_mode_runs_every_section_through_the_real_paths(tmp_path):
    """`DEVICE=cpu bash scripts/gpu_check.sh`: every section passes; CUDA-only parts say so."""
    proc, summary = _run(["bash", "scripts/gpu_check.sh"], tmp_path, DEVICE="cpu", PYTHON=sys.executable)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert summary["status"] == "passed"
    assert [s["section"] for s in summary["sections"]] == list(gpu_check.SECTIONS)
    assert all(s["status"] == "passed" for s in summary["sections"])

    packing = _cases(summary, "packing")
    names = [c["name"] for c in packing["sdpa/fp32"]["checks"]]
    assert packing["sdpa/fp32"]["status"] == "passed" and len(names) == 5
    assert "leak control: all-ones mask per-token |Δ|" in names  # the comparison can fail
    assert packing["sdpa/bf16"]["reason"] == "skipped: no CUDA (bf16)"

    train = _cases(summary, "train")
    assert {(m, p, g) for _, m, p, g in gpu_check.CPU_SIZES.train_matrix} >= {
        ("full", True, False),
        ("lora", False, True),
    }
    for case in train.values():
        assert case["status"] == "passed"
        assert case["metrics"]["tokens_per_s"] > 0 and case["metrics"]["flops_per_token"] > 0
        assert case["metrics"]["mfu"] == "skipped: no CUDA"

    assert _cases(summary, "packing")["instructkit_docs/fp32"]["status"] == "passed"
    varlen = _cases(summary, "varlen")
    assert "needs CUDA" in varlen["training choice and pre-flight"]["metrics"]["refusal"]
    (row,) = [c for name, c in varlen.items() if name != "training choice and pre-flight"]
    assert row["status"] == "passed" and row["metrics"]["ms_instructkit_varlen"].startswith("skipped")
    assert {c["name"].split(":")[0] for c in row["checks"]} == {"sdpa dense mask", "instructkit_docs"}
    loss = _cases(summary, "loss")["LM head + loss: chunked vs one projection"]
    assert loss["status"] == "passed" and loss["metrics"]["loss_rel"] < 1e-5

    evaluation = _cases(summary, "eval")
    assert evaluation["fp32 vs CPU fp32"]["status"] == "passed"
    assert evaluation["bf16 vs CPU fp32"]["status"] == "skipped"

    launch = _cases(summary, "accelerate")["fsdp launch: sharded save, interrupt, resume"]
    assert launch["status"] == "passed"
    assert launch["metrics"]["losses_resumed"]["4"] == launch["metrics"]["losses_first"]["4"]

    table = (tmp_path / "out" / "results.md").read_text()
    assert "| packing | sdpa/fp32 | passed |" in table and "| accelerate | passed |" in table


def test_a_failing_section_is_recorded_and_the_report_still_written(tmp_path):
    """A broken accelerate config fails that case (with the launcher's output); the other case passes."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("distributed_type: FSDP\nnum_processes: one\n")
    args = [sys.executable, str(SCRIPT), "run", "--device", "cpu", "--sections", "accelerate"]
    args += ["--isolation", "spawn", "--accelerate-config", str(broken)]
    proc, summary = _run(args, tmp_path)
    assert proc.returncode == 1
    assert summary["status"] == "failed: accelerate"
    cases = _cases(summary, "accelerate")
    assert cases["config files parse"]["status"] == "passed"
    failed = cases["fsdp launch: sharded save, interrupt, resume"]
    assert failed["status"] == "error" and "accelerate launch exited" in failed["traceback"]
    assert "| accelerate | fsdp launch" in (tmp_path / "out" / "results.md").read_text()


def test_a_section_past_its_budget_is_killed_and_reported(tmp_path):
    args = [sys.executable, str(SCRIPT), "run", "--device", "cpu", "--sections", "env,eval"]
    args += ["--isolation", "spawn", "--budget", "env=0.5", "--budget", "eval=0.5"]
    proc, summary = _run(args, tmp_path)
    assert proc.returncode == 1
    assert [s["status"] for s in summary["sections"]] == ["timeout", "timeout"]
    assert "killed at its" in summary["sections"][0]["traceback"]


def test_the_package_runs_as_a_folder_and_as_a_module():
    """`python scripts/gpu_check` and `python -m gpu_check` (scripts/ on the path) give the same CLI; the
    section modules never shadow real packages (sections/ is not put on sys.path)."""
    for args, cwd in (([str(SCRIPT)], REPO), (["-m", "gpu_check"], REPO / "scripts")):
        proc = subprocess.run(
            [sys.executable, *args, "run", "--help"], cwd=cwd, capture_output=True, text=True
        )
        assert proc.returncode == 0 and "--sections" in proc.stdout, proc.stderr
    assert {"varlen", "loss"} <= set(gpu_check.SECTIONS) and gpu_check.main is gpu_check.cli.main


def test_section_status_orders_error_failed_passed_skipped():
    passed, skipped = {"status": "passed"}, {"status": "skipped"}
    assert gpu_check.section_status({"cases": [passed, skipped]}) == "passed"
    assert gpu_check.section_status({"cases": [skipped]}) == "skipped"
    assert gpu_check.section_status({"cases": [passed, {"status": "error"}]}) == "failed"
    assert gpu_check.section_status({"cases": [passed], "traceback": "boom"}) == "error"


def test_wheel_pins_are_what_instructkit_needs_minus_what_the_gpu_machine_has():
    pins = gpu_check.wheel_pins()
    assert {"datasets", "transformers", "pydantic", "typer", "rich", "multiprocess", "xxhash"} <= set(pins)
    assert not {"torch", "numpy", "pyarrow", "matplotlib", "instructkit"} & set(pins)
    from importlib.metadata import version

    assert pins["datasets"] == version("datasets")


def _wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    """A minimal wheel holding one module `<name>_probe`."""
    path = folder / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}_probe.py", "VALUE = 1\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{info}/RECORD", "")
    return path


def test_install_wheels_installs_only_missing_or_newer_compatible_distributions(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "gpu_check_missing_dist", "1.0")  # not installed here → installed
    _wheel(wheels, "pyyaml", "0.0.1")  # older than the installed PyYAML → left alone
    _wheel(wheels, "gpu_check_other_python", "1.0", "cp399-cp399-manylinux2014_x86_64")  # wrong Python
    manifest = gpu_check.install_wheels(wheels, tmp_path / "site")
    chosen = {m["name"]: m["installed"] for m in manifest}
    assert chosen == {"gpu_check_missing_dist": True, "pyyaml": False, "gpu_check_other_python": False}
    assert (tmp_path / "site" / "gpu_check_missing_dist_probe.py").is_file()
    assert not (tmp_path / "site" / "pyyaml_probe.py").exists()
    assert json.loads((tmp_path / "site" / "manifest.json").read_text()) == manifest
