"""The SMT teacher: an encoder with K learned registers that writes a memory, and a causal decoder
that predicts the future from that memory.

    m_t    = E(x[t-Tc+1 .. t])                       (B, K, d), each token RMS-normalised
    logits = D([m_t ; x_{t+1} .. x_{t+Tf}])[K-1 : K+Tf-1]   (B, Tf, V)

Position K-1 of the decoder predicts the first future token from the memory alone; the student's
readout is initialised from D and its head, so `readout(m) == decode(m, empty)[:, 0]`.

Sources:
    SMT paper, "Pretraining Recurrent Networks without Recurrence" (teacher encoder and decoder, Sec. 3):
        https://arxiv.org/abs/2606.06479
    the authors' reference code (read, not copied): https://github.com/akarshkumar0101/smt
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_smt import SMTTeacherConfig
from .modeling_encoder import MemoryEncoder
from .modeling_layers import TransformerStack
from .modeling_utils import (  # noqa: F401  (also re-exported)
    SMTPreTrainedModel,
    call_with_constant_weights,
    check_memory,
    check_token_ids,
)


@dataclass
class SMTTeacherOutput(ModelOutput):
    """Output of [`SMTTeacherModel.forward`].

    loss: decoder cross-entropy over the future targets (when `labels` is given).
    logits: (B, Tf, V) decoder predictions; logits[:, j] predicts the future token j.
    memory: (B, K, d) the encoded memory.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    memory: torch.FloatTensor | None = None


class SMTTeacherModel(SMTPreTrainedModel, MemoryEncoder):
    """The teacher: a [`MemoryEncoder`] (`embed_tokens`, `registers`, `encoder`; see `modeling_encoder`) with a
    causal decoder and LM head on top. The embedding is shared by the encoder and the decoder."""

    config_class = SMTTeacherConfig
    config: SMTTeacherConfig
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}  # applied only with tie_word_embeddings=True

    def __init__(self, config: SMTTeacherConfig):
        super().__init__(config)
        self.build_memory_encoder(config, config.num_encoder_layers, config.intermediate_size, config.encoder_causal)
        self.decoder = TransformerStack.from_config(config, config.num_decoder_layers, config.intermediate_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    # ------------------------------------------------------------------ encoder
    def encode(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Compress a (left-padded) context into a memory.

        input_ids: (B, Tc) context tokens; attention_mask: (B, Tc), 1 = token, 0 = padding (left or right padding
        or holes: the memory of the row's tokens alone). A row of all padding (or Tc = 0) is the empty context and
        gives the empty-context memory. Returns (B, K, d).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch, context_length), got shape {tuple(input_ids.shape)}.")
        check_token_ids(input_ids, self.config.vocab_size)
        Tc = input_ids.shape[1]
        if Tc > self.config.max_context_length:
            raise ValueError(
                f"Context of {Tc} tokens exceeds max_context_length={self.config.max_context_length}; pass the last "
                f"{self.config.max_context_length} tokens or raise `max_context_length` in the teacher config."
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` shape {tuple(attention_mask.shape)} must match `input_ids` {tuple(input_ids.shape)}."
            )
        return MemoryEncoder.encode(self, input_ids, attention_mask)  # (B, K, d)

    def encode_prefixes(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """The memories of every prefix x[:t], t = 0..T, in one encoder pass (causal-context teacher only):
        input_ids (B, T) -> (B, T+1, K, d), with [:, t] equal to `encode(input_ids[:, :t])` up to float error."""
        if not self.config.encoder_causal:
            raise ValueError("encode_prefixes needs the causal-context encoder: build the teacher with "
                             "`SMTTeacherConfig(encoder_causal=True, ...)` (a bidirectional encoder's memory of x[:t] "
                             "depends on how the context ends, so prefixes cannot share one pass).")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch, length), got shape {tuple(input_ids.shape)}.")
        check_token_ids(input_ids, self.config.vocab_size)
        if input_ids.shape[1] > self.config.max_context_length:
            raise ValueError(f"Sequence of {input_ids.shape[1]} tokens exceeds max_context_length="
                             f"{self.config.max_context_length}; encode windows of at most that length.")
        return MemoryEncoder.encode_prefixes(self, input_ids)  # (B, T+1, K, d)

    def empty_memory(self, batch_size: int = 1) -> torch.Tensor:
        """E(empty context): the memory before any token, (B, K, d)."""
        ids = torch.zeros(batch_size, 0, dtype=torch.long, device=self.registers.device)
        return self.encode(ids, torch.zeros_like(ids))

    # ------------------------------------------------------------------ decoder
    def decode(self, memory: torch.Tensor, future_ids: torch.LongTensor | None = None) -> torch.Tensor:
        """Predict the future from a memory.

        memory: (B, K, d); future_ids: (B, Tf) the future inputs x_{t+1..t+Tf} (teacher forcing) or None.
        Returns logits (B, Tf, V) (Tf = 1 when `future_ids` is None): logits[:, j] predicts future token j
        from the memory and future_ids[:, :j].
        """
        check_memory(memory, self.config.memory_tokens, self.config.hidden_size)
        K = self.config.memory_tokens
        memory = memory.to(self.embed_tokens.weight.dtype)  # e.g. an fp32 memory into a bf16 teacher
        if future_ids is not None and (future_ids.dim() != 2 or future_ids.shape[0] != memory.shape[0]):
            raise ValueError(f"`future_ids` must be (batch, Tf) with the memory's batch size {memory.shape[0]}, got "
                             f"shape {tuple(future_ids.shape)}.")
        if future_ids is None or future_ids.shape[1] == 0:
            h = self.decoder(memory, causal=True)  # (B, K, d)
            return self.lm_head(h[:, K - 1 : K])  # (B, 1, V)
        check_token_ids(future_ids, self.config.vocab_size, "future_ids")
        Tf = future_ids.shape[1]
        x = torch.cat([memory, self.embed_tokens(future_ids[:, :-1])], dim=1)
        h = self.decoder(x, causal=True)  # (B, K+Tf-1, d)
        return self.lm_head(h[:, K - 1 : K - 1 + Tf])  # (B, Tf, V)

    def readout(self, memory: torch.Tensor, constant_weights: bool = False) -> torch.Tensor:
        """Next-token logits from a memory alone: (B, K, d) -> (B, V).

        constant_weights=True: the same logits, with the decoder's and head's weights held constant (the gradient
        reaches `memory` only; the one-step read-out loss, `SMTTrainingArguments.lambda_onestep_readout`)."""
        if not constant_weights:
            return self.decode(memory, None)[:, 0]
        check_memory(memory, self.config.memory_tokens, self.config.hidden_size)
        K = self.config.memory_tokens
        h = call_with_constant_weights(self.decoder, memory.to(self.embed_tokens.weight.dtype), causal=True)
        return call_with_constant_weights(self.lm_head, h[:, K - 1])

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        future_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SMTTeacherOutput:
        """Encode a context and decode its future.

        input_ids/attention_mask: (B, Tc) context; future_ids: (B, Tf) future inputs; labels: (B, Tf)
        targets aligned with the decoder outputs (labels[:, j] is predicted by logits[:, j]; -100 = ignore).
        return_dict=False (or `config.return_dict=False`) returns a tuple of the non-None fields. Attention weights
        and per-layer hidden states are not returned (the attention runs in SDPA kernels): `output_attentions` /
        `output_hidden_states` raise ValueError; the memory is `output.memory`.
        `num_items_in_batch` (what transformers' Trainer passes under gradient accumulation): the loss is the sum
        over the labelled targets divided by it, instead of their mean.
        Raises ValueError (naming the fix) without `input_ids` (`inputs_embeds` is not supported), for `future_ids`
        of another batch size, and for `labels` not shaped (B, Tf) (B, 1 without `future_ids`); TypeError for any
        other argument but `use_cache` (no cache: ignored) (`decoder_input_ids`, `position_ids`, `inputs_embeds` beside `input_ids`, a misspelling: they
        were ignored), except an all-zero `token_type_ids` (one segment, as a tokenizer gives for one text).
        """
        if input_ids is None:
            raise ValueError("SMTTeacherModel.forward needs `input_ids` (batch, Tc): the encoder reads token ids"
                             + (" (`inputs_embeds` is not supported)" if kwargs.get("inputs_embeds") is not None else "")
                             + ".")
        if future_ids is not None and future_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"`future_ids` has batch size {future_ids.shape[0]} but `input_ids` has "
                             f"{input_ids.shape[0]}: pass one future (batch, Tf) per context.")
        for flag in ("output_attentions", "output_hidden_states"):
            if kwargs.get(flag) or (kwargs.get(flag) is None and getattr(self.config, flag)):
                raise ValueError(f"{flag} is not supported by SMTTeacherModel (attention runs in SDPA kernels and the "
                                 "layers' outputs are not kept); the encoded memory is `output.memory` (B, K, d).")
        num_items = kwargs.pop("num_items_in_batch", None)
        ignored = ("output_attentions", "output_hidden_states", "use_cache")  # (the teacher keeps no cache)
        other = {k: v for k, v in kwargs.items() if v is not None and k not in ignored}
        if torch.is_tensor(other.get("token_type_ids")) and (torch.compiler.is_compiling()
                                                              or not bool(other["token_type_ids"].any())):
            other.pop("token_type_ids")
        if other:
            hint = (" (the future to decode goes in `future_ids`, its targets in `labels`)"
                    if {"decoder_input_ids", "decoder_attention_mask"} & set(other) else "")
            raise TypeError(f"SMTTeacherModel.forward got unsupported argument(s) {', '.join(sorted(other))}{hint}: it "
                            "takes input_ids, attention_mask, future_ids, labels and return_dict.")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        memory = self.encode(input_ids, attention_mask)
        logits = self.decode(memory, future_ids)
        loss = None
        if labels is not None:
            if tuple(labels.shape) != tuple(logits.shape[:2]):
                raise ValueError(
                    f"`labels` must have shape (batch, Tf) = {tuple(logits.shape[:2])}, one target per decoder output "
                    f"(Tf = future_ids' length, 1 without future_ids; labels[:, j] is predicted by logits[:, j]); got "
                    f"{tuple(labels.shape)}.")
            if num_items is None:
                loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
            else:
                loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                                       reduction="sum") / num_items
        out = SMTTeacherOutput(loss=loss, logits=logits, memory=memory)
        return out if return_dict else out.to_tuple()


__all__ = ["SMTTeacherModel", "SMTTeacherOutput", "SMTPreTrainedModel"]
