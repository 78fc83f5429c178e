"""One module per section; `SECTION_FUNCS` maps each section name to the function that runs its cases."""

from __future__ import annotations

from collections.abc import Callable

from ..context import Ctx
from .env import section_env
from .eval import section_eval
from .launch import section_accelerate
from .loss import section_loss
from .packing import section_packing
from .train import section_train
from .varlen import section_varlen

SECTION_FUNCS: dict[str, Callable[[Ctx], None]] = {
    "env": section_env,
    "packing": section_packing,
    "varlen": section_varlen,
    "loss": section_loss,
    "train": section_train,
    "eval": section_eval,
    "accelerate": section_accelerate,
}
