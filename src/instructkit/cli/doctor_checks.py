"""`instructkit doctor`: what this machine can run, before a long job finds out the hard way.

Versions come from package metadata (no heavy imports), devices from torch, packed-row attention
from the same isolation check training runs (on a tiny random Llama, about a second each), the hub
from one HEAD request with a short timeout, and cache folders from their sizes on disk.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

CORE_PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "accelerate", "peft")
OPTIONAL_PACKAGES = ("vllm", "flash-attn", "ray", "bitsandbytes", "deepspeed", "gguf", "trl", "lm-eval")
# train.attention.DOCS and VARLEN, named here so the report needs no torch import. DOCS is what packed
# training uses on a CPU (and on a GPU without flash-attn or torch's varlen kernels).
DOCS = "instructkit_docs"
VARLEN = "instructkit_varlen"
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", DOCS)
# flex_attention compiles on first use (about half a minute on a CPU), so it is checked only when asked.
SLOW_ATTENTION_IMPLEMENTATIONS = ("flex_attention",)

# What a need means, and the package that provides it (None: a device, not a package).
NEEDS: dict[str, str | None] = {
    "cuda": None,
    "bf16": None,
    "hub": None,
    "vllm": "vllm",
    "flash-attn": "flash-attn",
    "ray": "ray",
    "bitsandbytes": "bitsandbytes",
    "deepspeed": "deepspeed",
    "gguf": "gguf",
}


@dataclass
class Check:
    """One line of the report: what was checked, what was found, and whether it is usable."""

    section: str
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, section: str, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(section, name, ok, detail))

    def as_dict(self) -> list[dict[str, Any]]:
        return [c.__dict__ for c in self.checks]


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None (read from metadata, nothing imported)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_versions(report: Report) -> None:
    report.add("versions", "python", True, platform.python_version())
    for name in CORE_PACKAGES:
        version = package_version(name)
        report.add("versions", name, version is not None, version or "missing (required)")
    for name in OPTIONAL_PACKAGES:
        version = package_version(name)
        report.add("versions", name, version is not None, version or "not installed (optional)")


def check_devices(report: Report) -> None:
    import torch

    report.add("devices", "cpu", True, f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    if not torch.cuda.is_available():
        report.add("devices", "cuda", False, "no CUDA device")
        report.add("devices", "bf16", False, "no CUDA device (CPU runs use fp32)")
        return
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        report.add("devices", f"cuda:{index}", True, f"{props.name}, {props.total_memory / 2**30:.1f} GiB")
    report.add("devices", "cuda", True, f"{torch.cuda.device_count()} device(s), CUDA {torch.version.cuda}")
    bf16 = torch.cuda.is_bf16_supported()
    report.add("devices", "bf16", bf16, "supported" if bf16 else "not supported by this GPU")


def _tiny_llama(attn_implementation: str):
    import torch
    from transformers import LlamaForCausalLM

    from ..models.tiny import tiny_llama_config

    config = tiny_llama_config("nano", vocab_size=128, max_position_embeddings=64)
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return LlamaForCausalLM(config).to(device).eval()


def packed_attention_status(attn_implementation: str) -> tuple[bool, str]:
    """Whether packed rows stay isolated under this attention implementation, by the training check."""
    from ..train.collators import packed_cross_talk

    start = time.perf_counter()
    try:
        model = _tiny_llama(attn_implementation)
        leak = packed_cross_talk(model)
    except Exception as exc:  # an implementation that cannot run here is a finding, not a crash
        return False, f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    seconds = time.perf_counter() - start
    if leak > 1e-3:
        return False, f"LEAKS across packed examples (relative logit change {leak:.2g})"
    return True, f"isolated (cross-talk {leak:.1e}, {seconds:.1f} s)"


def varlen_status() -> tuple[bool, str]:
    """torch's varlen attention (`instructkit_varlen`): why it cannot run here, or its isolation in bf16
    (its kernels are half precision only; in fp32 it would silently test the per-document fallback)."""
    import torch

    from ..train.attention import varlen_unavailable

    why = varlen_unavailable()
    if why:
        return False, f"unavailable: {why}"
    with torch.autocast("cuda", dtype=torch.bfloat16):
        return packed_attention_status(VARLEN)


def check_attention(report: Report, implementations: Iterable[str] = ATTENTION_IMPLEMENTATIONS) -> None:
    for impl in implementations:
        ok, detail = packed_attention_status(impl)
        report.add("packed attention", impl, ok, detail)
    if implementations == ATTENTION_IMPLEMENTATIONS:
        report.add("packed attention", VARLEN, *varlen_status())
        report.add("packed attention", "training uses", *training_attention_status(report))


def training_attention_status(report: Report) -> tuple[bool, str]:
    """The attention packed training picks here by default, and whether its isolation check above passed."""
    from ..train.attention import training_attention

    impl = training_attention(None, packed=True) or "sdpa"
    found = [c for c in report.checks if c.section == "packed attention" and c.name == impl]
    verdict = ("isolated" if found[0].ok else "FAILS its check above") if found else "not checked"
    return bool(found and found[0].ok), f"{impl} for packed rows ({verdict}; --attn-implementation overrides)"


def hub_status(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the Hugging Face hub answers; offline mode is reported as such without a request."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False, "HF_HUB_OFFLINE=1 is set: hub ids cannot be loaded, local paths only"
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:  # an HTTP answer still proves it is reachable
        return True, f"{endpoint} answered ({exc.code})"
    except Exception as exc:
        return False, f"{endpoint} unreachable ({type(exc).__name__}): use local paths"
    return True, f"{endpoint} reachable"


def folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def cache_folders() -> dict[str, Path]:
    """The folders this toolkit and the libraries under it write caches to."""
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    instructkit = Path(os.environ.get("INSTRUCTKIT_CACHE", Path.home() / ".cache" / "instructkit"))
    return {
        "instructkit": instructkit,
        "hf hub": Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub")),
        "hf datasets": Path(os.environ.get("HF_DATASETS_CACHE", hf_home / "datasets")),
    }


def check_caches(report: Report) -> None:
    for name, path in cache_folders().items():
        if path.exists():
            report.add("caches", name, True, f"{path} ({folder_size(path) / 2**20:.1f} MiB)")
        else:
            report.add("caches", name, True, f"{path} (not created yet)")


def need_met(report: Report, need: str) -> tuple[bool, str]:
    """Whether one need (`cuda`, `bf16`, `hub` or a package) is met by what the report found."""
    if need not in NEEDS:
        return False, f"unknown need {need!r} (known: {', '.join(NEEDS)})"
    package = NEEDS[need]
    if package is not None:
        version = package_version(package)
        return version is not None, version or f"missing: pip install {package}"
    section = "hub" if need == "hub" else "devices"
    found = [c for c in report.checks if c.section == section and c.name == need]
    return (found[0].ok, found[0].detail) if found else (False, "not checked")


def run_doctor(
    needs: Iterable[str] = (), attention: bool = True, hub: bool = True, slow_attention: bool = False
) -> tuple[Report, bool]:
    """Every check, then the needs; returns the report and whether every need is met."""
    report = Report()
    check_versions(report)
    check_devices(report)
    if attention:
        check_attention(report)
        if slow_attention:
            check_attention(report, SLOW_ATTENTION_IMPLEMENTATIONS)
        else:
            for impl in SLOW_ATTENTION_IMPLEMENTATIONS:
                report.add(
                    "packed attention", impl, True, "not checked: compiles on first use (--all-attention)"
                )
    if hub:
        ok, detail = hub_status()
        report.add("hub", "hub", ok, detail)
    check_caches(report)
    all_met = True
    for need in needs:
        ok, detail = need_met(report, need)
        report.add("needs", need, ok, detail)
        all_met &= ok
    return report, all_met


# Recipe keys whose values name a model or tokenizer, and the key whose list names data sources.
MODEL_KEYS = ("model", "tokenizer", "synthesizer", "judge_model")
SOURCES_KEY = "sources"


def hub_references(value: Any, key: str = "") -> list[str]:
    """The model, tokenizer and data references in a recipe that read as hub ids (not on disk, not
    `tiny:`, `pretrained:` or the default synthesizer), by the one rule of `hub.path_reason`."""
    if isinstance(value, dict):
        return [ref for k, v in value.items() for ref in hub_references(v, str(k))]
    if isinstance(value, list):
        return [ref for v in value for ref in hub_references(v, key)]
    if not isinstance(value, str) or key not in (*MODEL_KEYS, SOURCES_KEY):
        return []
    return [value] if _reads_as_hub_id(value, dataset=key == SOURCES_KEY) else []


def _reads_as_hub_id(reference: str, dataset: bool) -> bool:
    from ..hub import is_local, path_reason
    from ..models.pretrained import is_pretrained_ref
    from ..models.tiny import is_tiny

    if reference in ("tiny", "default") or is_tiny(reference) or is_pretrained_ref(reference):
        return False
    return not is_local(reference) and path_reason(reference, dataset=dataset) is None


def recipe_needs(recipe: dict[str, Any]) -> list[str]:
    """What a recipe's settings require of the machine (GPU precision, backends, executors, the hub)."""
    needs: set[str] = set()
    if hub_references(recipe):
        needs.add("hub")
    values = {str(v).lower() for v in _leaves(recipe)}
    if "bf16" in values:
        needs.update({"cuda", "bf16"})
    if "fp16" in values or "qlora" in values:
        needs.add("cuda")
    if "qlora" in values:
        needs.add("bitsandbytes")
    if "flash_attention_2" in values:
        needs.update({"cuda", "flash-attn"})
    if "vllm" in values:
        needs.add("vllm")
    if "ray" in values:
        needs.add("ray")
    if any(v.endswith(".gguf") for v in values):
        needs.add("gguf")
    return sorted(needs)


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value
