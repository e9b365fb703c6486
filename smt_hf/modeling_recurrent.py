"""The recurrent student: an RNN whose state is a memory of K tokens.

    m_0     = initial_memory                      (K, d) stored tensor; SMT sets it to E(empty context)
    m_{t+1} = rmsnorm(f(m_t, embed(x_{t+1})))      f from the backbone registry (transformer | mlp | gru)
    logits  = g(m_t)                              causal Transformer over the K memory tokens, last position

`forward` reads tokens one at a time from the cache's memory (or m_0); logits[:, t] predicts token t+1
from the memory after tokens 0..t. The state handed to `generate()` is the memory alone.

Standard `PreTrainedModel` / `generate()` flags (README: "What `forward` and `generate()` return, and what is
refused"; checked for every backbone by tests/test_contract.py):
    hidden_states     `output_hidden_states=True` gives a 1-tuple holding (B, T, K*d): the memory after each token
                      read, flattened. The memory is the recurrence's only state; the updater's inner layers are not
                      states and are not returned (as Mamba returns one tensor per block, not the scan internals).
    attentions        refused with a ValueError: the student has no attention over the tokens it read.
    return_dict=False a plain tuple of the non-None output fields, in field order.
    inputs_embeds     (B, T, d) instead of input_ids: the same recurrence on the given token embeddings.
    past_key_values   an alias of `cache` (as is `cache_params`).
    dtype             a memory of another dtype (an fp32 teacher memory into a bf16 student) is cast to the model's
                      dtype in `step`, `readout`, `forward(memory=...)` and a cache's memory.

Sources:
    SMT paper, "Pretraining Recurrent Networks without Recurrence" (the student RNN, SMT and DMT):
        https://arxiv.org/abs/2606.06479
    the authors' reference code (read, not copied): https://github.com/akarshkumar0101/smt
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.utils import ModelOutput

from .backbones import build_updater, transition
from .cache import SMTMemoryCache
from .configuration_smt import SMTMemoryEncoderConfig, SMTRecurrentConfig, check_prefill
from .modeling_layers import TransformerStack
from .modeling_prefill import SMTPrefillEncoder
from .modeling_utils import (
    SMTPreTrainedModel,
    call_with_constant_weights,
    check_attention_mask,
    check_memory,
    check_token_ids,
    copy_full_,
    is_dtensor,
    local_tensor,
)


@torch.no_grad()
def empty_context_memory(teacher) -> torch.Tensor:
    """E(empty context) of `teacher` in eval mode, (K, d): the student's m_0 after SMT (its train/eval mode restored)."""
    was_training = teacher.training
    teacher.eval()
    memory = teacher.empty_memory(1)[0]
    teacher.train(was_training)
    return memory


@dataclass
class SMTRecurrentOutput(ModelOutput):
    """Output of [`SMTRecurrentModel.forward`].

    memories: (B, T, K, d) the memory after each token read.
    cache: the [`SMTMemoryCache`] holding the last memory (when `use_cache`).
    last_memory: (B, K, d) the memory after the last token (the starting memory when T = 0).
    """

    memories: torch.FloatTensor | None = None
    cache: SMTMemoryCache | None = None
    last_memory: torch.FloatTensor | None = None


@dataclass
class SMTRecurrentCausalLMOutput(ModelOutput):
    """Output of [`SMTRecurrentForCausalLM.forward`].

    loss: next-token cross-entropy (labels shifted inside, -100 ignored).
    logits: (B, T, V); logits[:, t] predicts token t+1 from the memory after tokens 0..t.
    cache: the [`SMTMemoryCache`] to continue from.
    memories: (B, T, K, d) when `output_memories=True`.
    hidden_states: when `output_hidden_states=True`, a 1-tuple holding (B, T, K*d), the memory after each token read,
        flattened ((B, 1, K*d), the state after the prompt, for a parallel prefill).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: SMTMemoryCache | None = None
    memories: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def resolve_cache(cache: SMTMemoryCache | None, kwargs: dict) -> SMTMemoryCache | None:
    """`cache`, or the same state under its older names `past_key_values` / `cache_params` (popped from kwargs)."""
    for alias in ("past_key_values", "cache_params"):
        value = kwargs.pop(alias, None)
        if value is None:
            continue
        if cache is not None and cache is not value:
            raise ValueError(f"Got both `cache` and `{alias}`: they are the same argument; pass the state once, as `cache`.")
        cache = value
    if cache is not None and not isinstance(cache, SMTMemoryCache):
        raise TypeError(f"The student's state is an SMTMemoryCache, got {type(cache).__name__}; pass the `cache` returned by "
                        "a previous forward/generate call, or `SMTMemoryCache(memory)` for a memory (B, K, d).")
    return cache


class SMTRecurrentPreTrainedModel(SMTPreTrainedModel):
    config_class = SMTRecurrentConfig
    config: SMTRecurrentConfig
    _is_stateful = True  # (read by older transformers; in 5.x the _assisted_decoding override below refuses)

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
        return self._step(self.as_state(memory), self.embed_tokens(input_ids))

    def as_state(self, memory: torch.Tensor) -> torch.Tensor:
        """Check a memory's shape (B, K, d) and cast it to the model's dtype (an fp32 teacher memory into a bf16
        student is cast, not refused)."""
        check_memory(memory, self.config.memory_tokens, self.config.hidden_size)
        return memory.to(self.initial_state.dtype)

    def _step(self, memory: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        return transition(self.updater, memory, token_embedding, self.config.rms_norm_eps)  # (B, K, d)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: SMTMemoryCache | None = None,
        use_cache: bool | None = None,
        memory: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        step_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> SMTRecurrentOutput | tuple:
        """Run the recurrence over input_ids (B, T) (or inputs_embeds (B, T, d)) from `memory`, else the cache's
        memory, else m_0. `past_key_values` is accepted as an alias of `cache`.

        attention_mask (B, T) or longer (the last T columns are used): positions with 0 leave the memory
        unchanged, so left-padded prompts give the same state as unpadded ones.
        step_fn: a transition (B, K, d), (B, d) -> (B, K, d) run instead of `_step` (e.g. the compiled one that
        `compile_step(model, install=False)` returns, which the training module passes in BPTT).
        """
        cache = resolve_cache(cache, kwargs)
        for flag in ("output_attentions", "output_hidden_states"):  # (they were accepted and ignored)
            if kwargs.get(flag):
                raise ValueError(f"{flag}=True is not supported by SMTRecurrentModel: its output's `memories` (B, T, K, "
                                 "d) is the state after each token read (there is no attention over tokens); "
                                 "SMTRecurrentForCausalLM takes output_hidden_states=True.")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        # 0. the token embeddings: from ids, or given (soft prompts, PEFT prompt tuning)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` (B, T) and `inputs_embeds` (B, T, hidden_size).")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"`input_ids` must be (batch, length), got shape {tuple(input_ids.shape)}.")
            check_token_ids(input_ids, self.config.vocab_size)
            emb = self.embed_tokens(input_ids)  # (B, T, d)
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(f"`inputs_embeds` must be (batch, length, hidden_size={self.config.hidden_size}), got "
                                 f"shape {tuple(inputs_embeds.shape)}.")
            emb = inputs_embeds.to(self.initial_state.dtype)
        B, T = emb.shape[:2]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        # 1. starting memory
        if memory is None and cache is not None and cache.is_initialized:
            memory = cache.memory
            if memory.shape[0] != B:
                hint = (f" With num_beams / num_return_sequences n = {B // memory.shape[0]}, call "
                        f"`cache.batch_repeat_interleave({B // memory.shape[0]})` before generate()."
                        if B % memory.shape[0] == 0 else "")
                raise ValueError(f"The cache holds {memory.shape[0]} sequences but input_ids has {B} rows.{hint}")
        memory = self.initial_memory(B) if memory is None else self.as_state(memory)
        if memory.shape[0] != B:
            raise ValueError(f"`memory` holds {memory.shape[0]} sequences but the input has {B} rows.")
        # 2. which positions update the memory (no data-dependent branch: compile/export trace one graph)
        keep = None
        if attention_mask is not None:
            check_attention_mask(attention_mask, B, T)
            keep = attention_mask[:, attention_mask.shape[1] - T:].to(torch.bool)  # (B, T)
        # 3. the recurrence, one token at a time
        step = self._step if step_fn is None else step_fn
        memories = []
        for t in range(T):
            new = step(memory, emb[:, t])  # (B, K, d)
            memory = new if keep is None else torch.where(keep[:, t, None, None], new, memory)
            memories.append(memory)
        memories = torch.stack(memories, dim=1) if memories else memory.new_zeros(B, 0, *memory.shape[1:])
        # 4. the constant-size cache
        if use_cache:
            if cache is None:
                cache = SMTMemoryCache()
            cache.update_memory(memory, T)
        out = SMTRecurrentOutput(memories=memories, cache=cache if use_cache else None, last_memory=memory)
        return out if return_dict else out.to_tuple()


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

    _tied_weights_keys = {"readout_head.lm_head.weight": "model.embed_tokens.weight"}  # only with tie_word_embeddings

    def __init__(self, config: SMTRecurrentConfig):
        super().__init__(config)
        self.model = SMTRecurrentModel(config)
        self.readout_head = SMTReadout(config)
        self.prefill_encoder = SMTPrefillEncoder(config) if config.prefill_encoder is not None else None
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

    def set_output_embeddings(self, new_embeddings):
        self.readout_head.lm_head = new_embeddings

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True) -> nn.Embedding:
        """As `PreTrainedModel.resize_token_embeddings` (embedding, readout head and `config.vocab_size`; ties are
        re-applied with `tie_word_embeddings=True`), and the carried prefill encoder's embedding too."""
        embeds = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if self.prefill_encoder is not None:
            old = self.prefill_encoder.embed_tokens
            if old.num_embeddings != embeds.num_embeddings:
                self.prefill_encoder.embed_tokens = self._get_resized_embeddings(old, embeds.num_embeddings,
                                                                                 mean_resizing=mean_resizing)
        return embeds

    # -- the recurrent API ---------------------------------------------------------------------------
    def initial_memory(self, batch_size: int) -> torch.Tensor:
        """m_0: (B, K, d)."""
        return self.model.initial_memory(batch_size)

    def step(self, memory: torch.Tensor, input_ids: torch.LongTensor) -> torch.Tensor:
        """m_{t+1} = f(m_t, x_{t+1}): (B, K, d), (B,) -> (B, K, d)."""
        return self.model.step(memory, input_ids)

    def readout(self, memory: torch.Tensor, constant_weights: bool = False) -> torch.Tensor:
        """Next-token logits from memories: (B, K, d) -> (B, V), or (B, T, K, d) -> (B, T, V).

        constant_weights=True: the same logits with the read-out's weights held constant (the gradient reaches
        `memory` only; DMT's one-step read-out loss, `SMTTrainingArguments.lambda_onestep_readout`)."""
        head = self.readout_head if not constant_weights else lambda m: call_with_constant_weights(self.readout_head, m)
        if memory.dim() == 4:
            B, T = memory.shape[:2]
            return head(self.model.as_state(memory.flatten(0, 1))).view(B, T, -1)
        return head(self.model.as_state(memory))

    def add_prefill_encoder(self, teacher, context_length: int | None = None, use_by_default: bool = False) -> None:
        """Carry a copy of `teacher`'s encoder for parallel prefill (see the `modeling_prefill` module): afterwards
        `generate(..., prefill="parallel")` builds the state from the prompt's last `context_length` tokens
        (default: the teacher's `max_context_length`; use the Tc SMT trained with) in one pass. Sets
        `config.prefill_encoder` (`SMTMemoryEncoderConfig.from_teacher`); the encoder is saved with the model.
        `use_by_default=True` also sets `config.prefill = "parallel"`. Raises ValueError when the teacher's memories
        are not this student's states, or context_length is not in [1, max_context_length]."""
        tc = teacher.config
        mismatch = [k for k in ("vocab_size", "hidden_size", "memory_tokens", "num_attention_heads")
                    if getattr(tc, k) != getattr(self.config, k)]
        if mismatch:
            raise ValueError(f"The teacher's {mismatch} differ from the student's: its memories are not this student's "
                             "states. Use the teacher this student was trained with (SMTRecurrentConfig.from_teacher).")
        self.config.prefill_encoder = SMTMemoryEncoderConfig.from_teacher(tc, context_length)
        encoder = SMTPrefillEncoder(self.config).to(device=teacher.registers.device, dtype=teacher.registers.dtype)
        encoder.load_teacher_encoder(teacher)
        state = self.model.initial_state  # the encoder computes the student's states: its device and dtype
        self.prefill_encoder = encoder.to(device=state.device, dtype=state.dtype)
        if use_by_default:
            self.config.prefill = "parallel"

    def prefill_mode(self, prefill: str | None = None) -> str:
        """`prefill` ("recurrent" | "parallel"), else `config.prefill`; anything else raises."""
        return check_prefill(prefill or self.config.prefill)

    def prefill_memory(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The state after a prompt from the carried encoder, in one pass: (B, T) -> (B, K, d)."""
        if self.prefill_encoder is None:
            raise ValueError("This student carries no prefill encoder: call `student.add_prefill_encoder(teacher)` "
                             "first, or use prefill='recurrent'.")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch, length), got shape {tuple(input_ids.shape)}.")
        check_token_ids(input_ids, self.config.vocab_size)
        if attention_mask is not None:
            check_attention_mask(attention_mask, *input_ids.shape)
        return self.prefill_encoder(input_ids, attention_mask)

    # -- generate() on the fast path (fast_decode.py) -------------------------------------------------
    def enable_fast_decode(self, compile: bool | str = "default", decode_chunk: int | None = None,
                           strict: bool = False) -> None:
        """Opt in: `generate()`'s greedy (and, uncompiled, sampling) loop runs on `FastGenerator` (fast.py; on CPU a
        compiled decode, chunks of `decode_chunk` steps) whenever its tokens are exactly the standard loop's; any
        other call runs the standard loop unchanged, or raises ValueError naming the supported set with
        `strict=True`. Per instance, not saved. The supported set: the `fast_decode` module."""
        from .fast_decode import enable_fast_decode

        enable_fast_decode(self, compile=compile, decode_chunk=decode_chunk, strict=strict)

    def disable_fast_decode(self) -> None:
        """Undo `enable_fast_decode`: `generate()` runs the standard loop only."""
        from .fast_decode import disable_fast_decode

        disable_fast_decode(self)

    def _sample(self, *args, **kwargs):
        """GenerationMixin's greedy / sampling loop (what `generate()` dispatches both modes to), or the same call on
        the fast path after `enable_fast_decode()` (`fast_decode.fast_sample`)."""
        if "_fast_decode" not in self.__dict__:
            return super()._sample(*args, **kwargs)
        from .fast_decode import fast_sample

        return fast_sample(self, *args, **kwargs)

    def _prefill(self, input_ids, generation_config, model_kwargs, is_first_iteration: bool = True):
        """GenerationMixin's prefill, refusing `prefill_chunk_size`: HF's chunked prefill slices the inputs itself
        (bypassing the cache handling of `prepare_inputs_for_generation`: new tokens went unread, a fully read prompt
        was read twice), and the recurrence already reads a prompt of any length at constant memory."""
        if generation_config.prefill_chunk_size is not None:
            raise ValueError(
                f"prefill_chunk_size={generation_config.prefill_chunk_size} is not supported by "
                f"{type(self).__name__}: its prefill is the recurrence over the prompt, whose memory is constant in the "
                "prompt's length (no KV cache grows), so chunking saves nothing. Unset prefill_chunk_size.")
        memory, cache = model_kwargs.get("memory"), model_kwargs.get("cache")
        if memory is None or model_kwargs.get("use_cache") is False:  # (without a cache each step reads from `memory`)
            return super()._prefill(input_ids, generation_config, model_kwargs, is_first_iteration=is_first_iteration)
        if cache is not None and cache.is_initialized:
            raise ValueError("generate() got both `memory` and a cache holding a memory: pass one (the state to start "
                             "from), e.g. cache=SMTMemoryCache(memory).")
        out = super()._prefill(input_ids, generation_config, model_kwargs, is_first_iteration=is_first_iteration)
        model_kwargs.pop("memory")  # read into the cache: the next steps go on from it (they restarted from `memory`)
        return out

    def _assisted_decoding(self, *args, **kwargs):
        """Refused: assisted generation (`assistant_model`, `prompt_lookup_num_tokens`, `assistant_early_exit`,
        `use_mtp`, `speculation_type`) checks draft tokens and rolls the state back past the rejected ones, and a
        recurrent memory cannot be rolled back (it failed inside transformers with "Assisted decoding requires a
        cache"). With num_beams > 1 transformers ignores the assistant itself (a warning)."""
        raise ValueError(
            "Assisted generation (assistant_model / prompt_lookup_num_tokens / assistant_early_exit / use_mtp / "
            "speculation_type) is not supported "
            f"by {type(self).__name__}: it undoes the rejected draft tokens, and a recurrent memory cannot be rolled "
            "back. Use greedy or sampling (do_sample) or beam search (num_beams).")

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, inputs_embeds=None, **kwargs):
        """As GenerationMixin's, with transformers' convention for a cache handed to `generate()`: `input_ids` are the
        whole sequence (the tokens the cache has read, then the new ones), or only the new tokens together with an
        `attention_mask` that covers the whole sequence. When the cache has read exactly `input_ids`, there are 0 new
        tokens (HF would slice `input_ids[:, -0:]`, reading the prompt twice): the next logits come from the cached
        state (the same for `inputs_embeds`, which transformers always reads as the whole sequence). Raises
        ValueError when `input_ids` (with a mask of their own length, or none) or `inputs_embeds` are shorter than
        what the cache has read: they cannot be the whole sequence. New tokens alone, without the whole-sequence
        mask, are read as the whole sequence (as in transformers), so pass the mask with them."""
        if kwargs.get("use_cache") is False and self.prefill_mode(kwargs.get("prefill")) == "parallel":
            raise ValueError("generate() with prefill='parallel' needs use_cache=True: without a cache every step would "
                             "re-encode the last prefill_encoder.context_length tokens instead of running the recurrence. Pass "
                             "use_cache=True, or prefill='recurrent' to recompute the recurrence from m_0 at every step.")
        if next_sequence_length is not None and next_sequence_length < 0:
            if inputs_embeds is not None:  # transformers reads inputs_embeds as the whole sequence, mask or not
                seen = inputs_embeds.shape[1] - next_sequence_length
                raise ValueError(
                    f"generate() got a cache that has read {seen} positions and inputs_embeds of "
                    f"{inputs_embeds.shape[1]}: with a cache, inputs_embeds must be the whole sequence (the embeddings "
                    "the cache has read, then the new ones), as in transformers. Pass torch.cat([read, new], dim=1).")
            seen = input_ids.shape[1] - next_sequence_length
            raise ValueError(
                f"generate() got a cache that has read {seen} tokens and input_ids of {input_ids.shape[1]} tokens (with "
                "an attention_mask of that length, or none): input_ids must be the whole sequence (the tokens the cache "
                "has read, then the new ones), as in transformers. Pass torch.cat([tokens_read, new_tokens], dim=1), or "
                "only the new tokens with an attention_mask covering the whole sequence "
                f"(shape (batch, {seen} + new tokens)).")
        if next_sequence_length == 0:
            input_ids, next_sequence_length = input_ids[:, :0], None
            if inputs_embeds is not None:
                inputs_embeds = inputs_embeds[:, :0]
        inputs = super().prepare_inputs_for_generation(input_ids, next_sequence_length=next_sequence_length,
                                                       inputs_embeds=inputs_embeds, **kwargs)
        if inputs.get("cache") is not None:
            # also under the pre-5.24 name: PEFT's prompt learning reads `past_key_values` to tell the first step
            # (inject the soft prompt) from the later ones (feed the new token only); forward takes both names
            inputs["past_key_values"] = inputs["cache"]
        return inputs

    @torch.no_grad()
    def init_from_teacher(self, teacher, initial_memory: torch.Tensor | None = None) -> None:
        """Make the student standalone after SMT: readout := the teacher's decoder + head (so g(m) equals the
        decoder's first-step prediction D(m)[K-1]) and m_0 := E(empty context), so `generate()` needs no teacher.

        The one place readout initialisation from the teacher happens; in smt/joint `SMTTrainer` calls it from one
        place (its `ReadoutFromTeacher` callback: when the trainer is built and after every optimizer step). Raises
        ValueError naming the fix when the readout does not compute the decoder's function (other depth, widths,
        heads, rope_theta or eps).

        Under FSDP2 (`fully_shard`; parameters are DTensor shards) call it on every process, outside forward (the
        parameters sharded): the readout is copied shard to shard, no communication. E(empty) needs the teacher's
        encoder gathered, which only the caller holding the FSDP root can do, so pass it as `initial_memory` (K, d),
        computed in eval mode between `root.unshard()` and `root.reshard()`, as `SMTTrainer` does; without it a sharded
        teacher raises ValueError."""
        tc, sc = teacher.config, self.config
        # the settings that define the decoder's function (not only its parameter shapes): (teacher, student) names
        pairs = [("vocab_size", "vocab_size"), ("hidden_size", "hidden_size"), ("memory_tokens", "memory_tokens"),
                 ("num_attention_heads", "num_attention_heads"), ("num_decoder_layers", "readout_layers"),
                 ("intermediate_size", "readout_intermediate_size"), ("rope_theta", "rope_theta"),
                 ("rms_norm_eps", "rms_norm_eps")]
        bad = [f"{t}={getattr(tc, t)!r} vs {s_}={getattr(sc, s_)!r}" for t, s_ in pairs if getattr(tc, t) != getattr(sc, s_)]
        src, dst = teacher.decoder, self.readout_head.decoder
        if bad or sum(1 for _ in src.parameters()) != sum(1 for _ in dst.parameters()) or any(
            p.shape != q.shape for p, q in zip(src.parameters(), dst.parameters())
        ):
            raise ValueError(
                "The student readout must compute the same function as the teacher decoder to be initialised from it "
                f"(teacher vs student: {'; '.join(bad) or 'parameter shapes differ'}): build the student with "
                "`SMTRecurrentConfig.from_teacher(teacher.config, ...)` (readout_layers = num_decoder_layers, same widths)."
            )
        head, embed = self.readout_head.lm_head.weight, self.get_input_embeddings().weight
        # (FSDP2 shards: compare this process's local storage; a sharded tensor itself reports data_ptr() 0)
        head_ptr, embed_ptr = local_tensor(head).data_ptr(), local_tensor(embed).data_ptr()
        if getattr(sc, "tie_word_embeddings", False) or head is embed or (head_ptr == embed_ptr and head_ptr != 0):
            raise ValueError(
                "The student's readout head is tied to its token embedding (tie_word_embeddings=True): copying the "
                "teacher head in would also overwrite the embedding its updater f reads, changing the trained transition. "
                "Build the student with `SMTRecurrentConfig.from_teacher(teacher.config, ..., tie_word_embeddings=False)`."
            )
        if initial_memory is None and any(is_dtensor(p) for p in teacher.parameters()):
            raise ValueError(
                "The teacher's parameters are FSDP2 shards (DTensor), so E(empty) can't be computed here: compute it "
                "with the FSDP root's parameters gathered (`root.unshard()`; `teacher.eval().empty_memory(1)[0]`; "
                "`root.reshard()`) and pass it as `init_from_teacher(teacher, initial_memory=...)`, as SMTTrainer does."
            )
        dst.load_state_dict(src.state_dict())  # (FSDP2: DTensor shards, copied shard to shard)
        self.readout_head.lm_head.load_state_dict(teacher.lm_head.state_dict())
        self.set_initial_memory(empty_context_memory(teacher) if initial_memory is None else initial_memory)

    @torch.no_grad()
    def set_initial_memory(self, memory: torch.Tensor) -> None:
        """Store m_0 (K, d) or (1, K, d), e.g. the teacher's empty-context memory (the full m_0 also when m_0 is an
        FSDP2 shard: every process then calls this)."""
        memory = memory.reshape(self.config.memory_tokens, self.config.hidden_size)
        copy_full_(self.model.initial_state, memory)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: SMTMemoryCache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        memory: torch.Tensor | None = None,
        output_memories: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        prefill: str | None = None,
        return_dict: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        step_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> SMTRecurrentCausalLMOutput | tuple:
        """input_ids (B, T) (or inputs_embeds (B, T, d)) -> logits (B, T, V), loss when labels (B, T) are given
        (shifted inside). `past_key_values` / `cache_params` are aliases of `cache`.

        prefill ("recurrent" | "parallel", default `config.prefill`): with "parallel", a call that starts from no
        cache and no memory builds the state with the carried teacher encoder in one pass and returns the last
        position's logits only, (B, 1, V) (what `generate()` needs); later calls (a cache is given) recur as usual.
        logits_to_keep: an int keeps the last positions' logits (0: all), a 1-D tensor the positions it names (as
        transformers' causal LMs; their 2-D per-row positions or masks are refused). With T = 0 and `logits_to_keep` > 0 the logits are the starting memory's
        prediction, (B, 1, V) (an empty prompt generates from m_0). output_hidden_states: see `SMTRecurrentCausalLMOutput.hidden_states`;
        output_attentions=True raises ValueError (no attention over tokens); return_dict=False returns a tuple.
        step_fn: the transition to run instead of the model's own (see `SMTRecurrentModel.forward`).
        """
        # 0. flags: refused ones, config defaults, the prefill mode
        cache = resolve_cache(cache, kwargs)
        if output_attentions or (output_attentions is None and self.config.output_attentions):
            raise ValueError("output_attentions is not supported: the recurrent student has no attention over the tokens "
                             "it has read (its state is a K-token memory). Use output_hidden_states=True for the memory "
                             "after each token, or output_memories=True.")
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        prefill = self.prefill_mode(prefill)
        starts_fresh = memory is None and (cache is None or not cache.is_initialized)
        tokens = input_ids if input_ids is not None else inputs_embeds
        T = 0 if tokens is None else tokens.shape[1]
        # 1. parallel prefill: the carried encoder gives the state after the prompt in one pass (B, K, d)
        if prefill == "parallel" and starts_fresh and T > 0:
            if labels is not None or output_memories:
                raise ValueError("prefill='parallel' gives the state after the prompt only (no per-position logits or "
                                 "memories); pass prefill='recurrent' to compute a loss or output memories.")
            if input_ids is None:
                raise ValueError("prefill='parallel' reads token ids with the carried teacher encoder; with "
                                 "`inputs_embeds` pass prefill='recurrent'.")
            state = self.prefill_memory(input_ids, attention_mask)  # (B, K, d)
            use_cache = self.config.use_cache if use_cache is None else use_cache
            if use_cache:
                cache = cache if cache is not None else SMTMemoryCache()
                cache.update_memory(state, input_ids.shape[1])
            out = SMTRecurrentCausalLMOutput(logits=self.readout(state)[:, None], cache=cache if use_cache else None,
                                             hidden_states=(state.flatten(1)[:, None],) if output_hidden_states else None)
            return out if return_dict else out.to_tuple()
        # 2. the recurrence over the tokens (SMTRecurrentModel.forward)
        out = self.model(input_ids, attention_mask=attention_mask, cache=cache, use_cache=use_cache, memory=memory,
                         inputs_embeds=inputs_embeds, return_dict=True, step_fn=step_fn)
        memories = out.memories  # (B, T, K, d)
        # 3. readout logits of the kept positions: the last `logits_to_keep` (int), or the positions a 1-D tensor names
        positions = isinstance(logits_to_keep, torch.Tensor)
        if positions and logits_to_keep.dim() != 1:
            raise ValueError(f"logits_to_keep as a tensor is a 1-D tensor of positions (per-row 2-D positions or masks "
                             f"are not supported), got shape {tuple(logits_to_keep.shape)}.")
        if positions:
            kept = memories[:, logits_to_keep]
        else:
            kept = memories[:, -logits_to_keep:] if logits_to_keep else memories
        if kept.shape[1] > 0:
            logits = self.readout(kept)
        elif not positions and logits_to_keep:
            # no new token and the last prediction asked for: the one from the current state (an empty prompt, or
            # generate() after a cache that has read the whole prompt)
            logits = self.readout(out.last_memory)[:, None]  # (B, 1, V)
        else:
            logits = kept.new_zeros(kept.shape[0], 0, self.config.vocab_size)
        # 4. loss and outputs
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        result = SMTRecurrentCausalLMOutput(
            loss=loss, logits=logits, cache=out.cache, memories=memories if output_memories else None,
            hidden_states=(memories.flatten(2),) if output_hidden_states else None,
        )
        return result if return_dict else result.to_tuple()


__all__ = ["SMTRecurrentModel", "SMTRecurrentForCausalLM", "SMTRecurrentOutput", "SMTRecurrentCausalLMOutput"]
