"""The recurrent student: an RNN whose state is a memory of K tokens.

    m_0     = initial_memory                      (K, d) stored tensor; SMT sets it to E(empty context)
    m_{t+1} = rmsnorm(f(m_t, embed(x_{t+1})))      f from the backbone registry (transformer | mlp | gru)
    logits  = g(m_t)                              causal Transformer over the K memory tokens, last position

`forward` reads tokens one at a time from the cache's memory (or m_0); logits[:, t] predicts token t+1
from the memory after tokens 0..t. The state handed to `generate()` is the memory alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.utils import ModelOutput

from .backbones import build_updater
from .cache import SMTMemoryCache
from .configuration_smt import SMTRecurrentConfig
from .modeling_layers import TransformerStack, rms_normalize
from .modeling_teacher import SMTPreTrainedModel, check_memory, check_token_ids


@dataclass
class SMTRecurrentOutput(ModelOutput):
    """Output of [`SMTRecurrentModel.forward`].

    memories: (B, T, K, d) the memory after each token read.
    cache: the [`SMTMemoryCache`] holding the last memory (when `use_cache`).
    """

    memories: torch.FloatTensor | None = None
    cache: SMTMemoryCache | None = None


@dataclass
class SMTRecurrentCausalLMOutput(ModelOutput):
    """Output of [`SMTRecurrentForCausalLM.forward`].

    loss: next-token cross-entropy (labels shifted inside, -100 ignored).
    logits: (B, T, V); logits[:, t] predicts token t+1 from the memory after tokens 0..t.
    cache: the [`SMTMemoryCache`] to continue from.
    memories: (B, T, K, d) when `output_memories=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: SMTMemoryCache | None = None
    memories: torch.FloatTensor | None = None


class SMTRecurrentPreTrainedModel(SMTPreTrainedModel):
    config_class = SMTRecurrentConfig
    config: SMTRecurrentConfig
    _is_stateful = True

    def _init_extra(self, module, std):
        if isinstance(module, SMTRecurrentModel):
            # unit-variance entries: an (approximately) RMS-normalised memory, like every other memory
            nn.init.normal_(module.initial_state, mean=0.0, std=1.0)


class SMTRecurrentModel(SMTRecurrentPreTrainedModel):
    """Embedding + updater + initial memory: the recurrence without a readout."""

    def __init__(self, config: SMTRecurrentConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.updater = build_updater(config)
        self.initial_state = nn.Parameter(torch.zeros(config.memory_tokens, config.hidden_size))  # (K, d)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def initial_memory(self, batch_size: int) -> torch.Tensor:
        """m_0 for a batch: (B, K, d)."""
        return self.initial_state.unsqueeze(0).expand(batch_size, -1, -1)

    def step(self, memory: torch.Tensor, input_ids: torch.LongTensor) -> torch.Tensor:
        """One transition m_{t+1} = f(m_t, x_{t+1}): memory (B, K, d), input_ids (B,) -> (B, K, d).
        This is what SMT trains, one supervised step at a time."""
        check_memory(memory, self.config.memory_tokens, self.config.hidden_size)
        if input_ids.dim() != 1 or input_ids.shape[0] != memory.shape[0]:
            raise ValueError(
                f"`input_ids` for one step must be (batch,) = ({memory.shape[0]},), got {tuple(input_ids.shape)}."
            )
        check_token_ids(input_ids, self.config.vocab_size)
        return self._step(memory, self.embed_tokens(input_ids))

    def _step(self, memory: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        return rms_normalize(self.updater(memory, token_embedding), self.config.rms_norm_eps)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: SMTMemoryCache | None = None,
        use_cache: bool | None = None,
        memory: torch.Tensor | None = None,
        **kwargs,
    ) -> SMTRecurrentOutput:
        """Run the recurrence over input_ids (B, T) from `memory`, else the cache's memory, else m_0.

        attention_mask (B, T) or longer (the last T columns are used): positions with 0 leave the memory
        unchanged, so left-padded prompts give the same state as unpadded ones.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch, length), got shape {tuple(input_ids.shape)}.")
        check_token_ids(input_ids, self.config.vocab_size)
        B, T = input_ids.shape
        use_cache = self.config.use_cache if use_cache is None else use_cache
        # 1. starting memory
        if memory is None and cache is not None and cache.is_initialized:
            memory = cache.memory
            if memory.shape[0] != B:
                raise ValueError(f"The cache holds {memory.shape[0]} sequences but input_ids has {B} rows.")
        if memory is None:
            memory = self.initial_memory(B)
        check_memory(memory, self.config.memory_tokens, self.config.hidden_size)
        # 2. which positions update the memory
        keep = None
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(
                    f"`attention_mask` must be (batch, >= length) = ({B}, >={T}), got {tuple(attention_mask.shape)}."
                )
            keep = attention_mask[:, -T:].to(torch.bool)  # (B, T)
            if bool(keep.all()):
                keep = None
        # 3. the recurrence, one token at a time
        emb = self.embed_tokens(input_ids)  # (B, T, d)
        memories = []
        for t in range(T):
            new = self._step(memory, emb[:, t])  # (B, K, d)
            memory = new if keep is None else torch.where(keep[:, t, None, None], new, memory)
            memories.append(memory)
        memories = torch.stack(memories, dim=1) if memories else memory.new_zeros(B, 0, *memory.shape[1:])
        # 4. the constant-size cache
        if use_cache:
            if cache is None:
                cache = SMTMemoryCache()
            cache.update_memory(memory, T)
        return SMTRecurrentOutput(memories=memories, cache=cache if use_cache else None)


class SMTReadout(nn.Module):
    """g(m): causal Transformer over the K memory tokens, last position -> linear head. Same layout as the
    teacher decoder (`decoder` + `lm_head`) so SMT can copy it in."""

    def __init__(self, config: SMTRecurrentConfig):
        super().__init__()
        self.decoder = TransformerStack.from_config(config, config.readout_layers, config.readout_intermediate_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """memory (N, K, d) -> logits (N, V)."""
        return self.lm_head(self.decoder(memory, causal=True)[:, -1])


class SMTRecurrentForCausalLM(SMTRecurrentPreTrainedModel, GenerationMixin):
    """The student RNN with its readout: a causal LM with an O(1)-per-token, constant-size state."""

    def __init__(self, config: SMTRecurrentConfig):
        super().__init__(config)
        self.model = SMTRecurrentModel(config)
        self.readout_head = SMTReadout(config)
        self.post_init()

    # -- HF plumbing ---------------------------------------------------------------------------------
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward builds its own SMTMemoryCache

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.readout_head.lm_head

    # -- the recurrent API ---------------------------------------------------------------------------
    def initial_memory(self, batch_size: int) -> torch.Tensor:
        """m_0: (B, K, d)."""
        return self.model.initial_memory(batch_size)

    def step(self, memory: torch.Tensor, input_ids: torch.LongTensor) -> torch.Tensor:
        """m_{t+1} = f(m_t, x_{t+1}): (B, K, d), (B,) -> (B, K, d)."""
        return self.model.step(memory, input_ids)

    def readout(self, memory: torch.Tensor) -> torch.Tensor:
        """Next-token logits from memories: (B, K, d) -> (B, V), or (B, T, K, d) -> (B, T, V)."""
        if memory.dim() == 4:
            B, T = memory.shape[:2]
            return self.readout_head(memory.flatten(0, 1)).view(B, T, -1)
        check_memory(memory, self.config.memory_tokens, self.config.hidden_size)
        return self.readout_head(memory)

    @torch.no_grad()
    def set_initial_memory(self, memory: torch.Tensor) -> None:
        """Store m_0 (K, d) or (1, K, d), e.g. the teacher's empty-context memory."""
        memory = memory.reshape(self.config.memory_tokens, self.config.hidden_size)
        self.model.initial_state.copy_(memory.to(self.model.initial_state.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: SMTMemoryCache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        memory: torch.Tensor | None = None,
        output_memories: bool = False,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SMTRecurrentCausalLMOutput:
        """input_ids (B, T) -> logits (B, T, V), loss when labels (B, T) are given (shifted inside)."""
        out = self.model(input_ids, attention_mask=attention_mask, cache=cache, use_cache=use_cache, memory=memory)
        memories = out.memories  # (B, T, K, d)
        kept = memories[:, -logits_to_keep:] if logits_to_keep else memories
        logits = self.readout(kept) if kept.shape[1] > 0 else kept.new_zeros(kept.shape[0], 0, self.config.vocab_size)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return SMTRecurrentCausalLMOutput(
            loss=loss, logits=logits, cache=out.cache, memories=memories if output_memories else None
        )


__all__ = ["SMTRecurrentModel", "SMTRecurrentForCausalLM", "SMTRecurrentOutput", "SMTRecurrentCausalLMOutput"]
