"""Where a stage runs: `local` (this process and its `num_proc`/`num_workers` pools, the default) or `ray`.

Ray is an optional extra (`pip install instructkit[ray]`), imported only when `--executor ray` asks
for it. `--ray-address` joins a running cluster (`auto`, or `ray://host:10001`); without it a local
one is started for the run. The Ray paths reuse the local stages' functions (prompt building,
tokenization and masks, packing, scoring) and write the same output formats; see docs/distributed.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InstructkitError

Executor = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "ray")


class ExecutorSettings(BaseModel):
    """`--executor` and `--ray-address`, declared once for every command that takes them."""

    model_config = ConfigDict(extra="forbid")

    executor: str = Field(
        "local",
        description="local (this machine) or ray (a Ray cluster; needs the ray extra of instructkit).",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join (e.g. auto or ray://head:10001); unset: start a local one."
    )

    def checked(self) -> Executor:
        """The executor, validated (see `check_executor`)."""
        return check_executor(self.executor, self.ray_address)


def check_executor(name: str, ray_address: str | None = None) -> Executor:
    """Validate `--executor` (and that `--ray-address` is only given with `ray`)."""
    if name not in EXECUTORS:
        raise InstructkitError(f"unknown executor {name!r}; executors: {', '.join(EXECUTORS)}")
    if ray_address and name != "ray":
        raise InstructkitError("--ray-address needs --executor ray")
    return name  # type: ignore[return-value]


def import_ray() -> Any:
    """The `ray` module, or a clear error saying how to install the extra."""
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library is part of the extra)
    except ImportError as exc:
        raise InstructkitError(
            f"--executor ray needs Ray Data ({exc}); install it with: pip install 'instructkit[ray]'"
        ) from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connect to `address`, or start a local cluster; reuse a connection this process already has.

    Ray Data is told to keep block order, so every Ray path returns rows in input order (the
    property the equality with the local executor rests on).
    """
    ray = import_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        elif num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    return ray


def pool_size(ray: Any, requested: int | None, per_actor_gpus: float = 0.0) -> int:
    """Actors in a pool: as asked, else one per GPU (GPU work) or per CPU of the cluster."""
    if requested:
        return max(1, requested)
    resources = ray.cluster_resources()
    key = "GPU" if per_actor_gpus else "CPU"
    return max(1, int(resources.get(key, 1) // max(per_actor_gpus, 1)))
