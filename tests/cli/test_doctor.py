"""`instructkit doctor` on this machine: real versions, real isolation checks, exit code from needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from instructkit.cli.doctor_checks import need_met, packed_attention_status, recipe_needs, run_doctor


def _doctor(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "instructkit", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_doctor_json_reports_versions_devices_attention_and_caches():
    result = _doctor("--json", "--no-hub")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    checks = {(c["section"], c["name"]): c for c in report["checks"]}
    import torch
    import transformers

    assert checks[("versions", "torch")]["detail"] == torch.__version__
    assert checks[("versions", "transformers")]["detail"] == transformers.__version__
    assert checks[("devices", "cuda")]["ok"] == torch.cuda.is_available()
    assert checks[("packed attention", "sdpa")]["ok"] is True
    assert "isolated" in checks[("packed attention", "sdpa")]["detail"]
    assert ("caches", "instructkit") in checks


def test_a_missing_need_exits_non_zero_and_names_it():
    import torch

    result = _doctor("--no-attention", "--no-hub", "--need", "cuda")
    assert result.returncode == (0 if torch.cuda.is_available() else 1)
    assert "needs" in result.stdout and "cuda" in result.stdout


def test_offline_hub_is_reported_as_unmet_need(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report, met = run_doctor(["hub"], attention=False)
    assert met is False
    ok, detail = need_met(report, "hub")
    assert not ok and "HF_HUB_OFFLINE" in detail


def test_unavailable_attention_is_reported_not_raised():
    ok, detail = packed_attention_status("no_such_attention")
    assert ok is False and detail.startswith("unavailable")


def test_recipe_needs_follow_its_settings():
    recipe = {"train": {"precision": "bf16", "method": "qlora"}, "eval": {"backend": "vllm"}}
    assert recipe_needs(recipe) == ["bf16", "bitsandbytes", "cuda", "vllm"]
    assert recipe_needs({"train": {"precision": "fp32"}}) == []
