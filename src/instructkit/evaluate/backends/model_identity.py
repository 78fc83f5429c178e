"""The model digests the eval cache keys on; they live with the other identity code in
`instructkit.models.identity` and are re-exported here for the backends."""

from __future__ import annotations

from ...models.identity import (
    IGNORED_DIRS,
    IGNORED_FILES,
    is_behaviour_file,
    model_dir_digest,
    source_digest,
    state_dict_digest,
    tokenizer_digest,
)

__all__ = [
    "IGNORED_DIRS",
    "IGNORED_FILES",
    "is_behaviour_file",
    "model_dir_digest",
    "source_digest",
    "state_dict_digest",
    "tokenizer_digest",
]
