"""The student's constant-size state as a `transformers` Cache.

The whole state of a sequence is its memory (K, d). `generate()` hands this object back to `forward` at
every step (under the 5.24+ argument name `cache`) and reorders it for beam search. A cache passed *into*
`generate()` must hold one row per row it will run: with `num_beams` or `num_return_sequences` n > 1, call
`cache.batch_repeat_interleave(n)` first. Its size never depends on the number of tokens read.

The cache is a registered pytree node (children: `memory`; context: `seen_tokens`), so a model output holding it
can leave `torch.export.export` and a `torch.compile(fullgraph=True)` region.
"""

from __future__ import annotations

import torch
import torch.utils._pytree as pytree
from transformers.cache_utils import Cache


class SMTMemoryCache(Cache):
    """Holds `memory` (B, K, d) and `seen_tokens`, the number of positions read so far (padding included).

    `get_seq_length()` returns `seen_tokens` so that `generate()` passes only the new tokens when a user
    continues from a returned cache with the full sequence (or with only the new tokens and an attention_mask
    covering the whole sequence, transformers' two conventions); the memory itself stays (B, K, d).
    """

    is_compileable = False

    def __init__(self, memory: torch.Tensor | None = None, seen_tokens: int = 0):
        super().__init__(layers=[])
        self.memory = memory
        self.seen_tokens = seen_tokens

    def __repr__(self):
        shape = None if self.memory is None else tuple(self.memory.shape)
        return f"SMTMemoryCache(memory={shape}, seen_tokens={self.seen_tokens})"

    # -- what generate() and users query ------------------------------------------------------------
    @property
    def is_initialized(self) -> bool:
        return self.memory is not None

    @property
    def is_linear(self) -> list[bool]:
        # Reported as a non-linear layer so that generate() slices re-fed prompts by get_seq_length().
        return [False]

    @property
    def is_sliding(self) -> list[bool]:
        return [False]

    @property
    def is_dummy(self) -> list[bool]:
        return [False]

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def batch_size(self) -> int:
        return 0 if self.memory is None else self.memory.shape[0]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def nbytes(self) -> int:
        """Bytes held by the state (constant in the number of tokens read)."""
        return 0 if self.memory is None else self.memory.numel() * self.memory.element_size()

    # -- updates ------------------------------------------------------------------------------------
    def update_memory(self, memory: torch.Tensor, num_new_tokens: int) -> None:
        self.memory = memory
        self.seen_tokens += num_new_tokens

    def reset(self) -> None:
        self.memory = None
        self.seen_tokens = 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.memory is not None:
            self.memory = self.memory.index_select(0, beam_idx.to(self.memory.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.memory is not None:
            self.memory = self.memory.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.memory is not None:
            self.memory = self.memory[indices]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError(
            "A recurrent memory cannot be cropped (the state before those tokens is gone); re-run the prompt instead. "
            "(So an SMT student cannot be the assistant_model of assisted generation, which crops its draft's cache.)"
        )


def _flatten(cache: SMTMemoryCache):
    return [cache.memory], cache.seen_tokens


def _unflatten(children, seen_tokens: int) -> SMTMemoryCache:
    return SMTMemoryCache(children[0], seen_tokens)


def _flatten_with_keys(cache: SMTMemoryCache):
    return [(pytree.GetAttrKey("memory"), cache.memory)], cache.seen_tokens


pytree.register_pytree_node(
    SMTMemoryCache, _flatten, _unflatten, serialized_type_name=f"{SMTMemoryCache.__module__}.SMTMemoryCache",
    flatten_with_keys_fn=_flatten_with_keys,
)

__all__ = ["SMTMemoryCache"]
