"""Configurations for the SMT teacher (encoder/decoder) and the recurrent student.

Notation used across the package:
    B  batch            V  vocabulary size       d  hidden size (model width)
    K  memory tokens    Z  = K * d memory size   T  sequence length
    Tc teacher context  Tf future (decoder) horizon
A memory ``m`` is a tensor of shape (B, K, d), each of its K tokens RMS-normalised (no gain).
"""

import copy
import math
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

BACKBONES = ("transformer", "mlp", "gru")
PREFILL_MODES = ("recurrent", "parallel")


def check_prefill(prefill) -> str:
    """`prefill` if it is one of PREFILL_MODES, else ValueError (the config's field and `generate(prefill=...)`)."""
    if prefill not in PREFILL_MODES:
        raise ValueError(f"prefill must be 'recurrent' or 'parallel', got {prefill!r}.")
    return prefill


def _check_positive(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}. Set `{name}={minimum}` or more.")


def _check_heads(hidden_size: int, num_attention_heads: int) -> None:
    _check_positive("num_attention_heads", num_attention_heads)
    if hidden_size % num_attention_heads != 0:
        divisors = [h for h in range(1, min(hidden_size, 64) + 1) if hidden_size % h == 0]
        raise ValueError(
            f"`hidden_size` ({hidden_size}) must be divisible by `num_attention_heads` ({num_attention_heads}). "
            f"Pick `num_attention_heads` from {divisors} or change `hidden_size`."
        )
    if (hidden_size // num_attention_heads) % 2 != 0:
        raise ValueError(
            f"The head size hidden_size / num_attention_heads = {hidden_size // num_attention_heads} must be even "
            "for rotary embeddings; change `num_attention_heads` or `hidden_size`."
        )


def _check_weights_file(kwargs: dict) -> None:
    """A config.json's `transformers_weights` names the weights file `from_pretrained` reads; only safetensors are
    read (smt-hf never unpickles weights), so a pickled file named there is refused before any is downloaded."""
    name = kwargs.get("transformers_weights")
    if name is not None and not str(name).endswith((".safetensors", ".safetensors.index.json")):
        raise ValueError(f"transformers_weights={name!r} names a pickled weights file: smt-hf loads safetensors "
                         "checkpoints only (it never unpickles weights); name a .safetensors file or drop the key.")


def _check_dropout(dropout: float) -> None:
    if not _is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be a number in [0, 1), got {dropout!r}.")


def _is_number(value) -> bool:
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _check_positive_numbers(config, *names: str) -> None:
    """ValueError naming the field for a float setting that is not a finite number > 0 (a negative eps gave nan
    logits). The types of all fields are checked by `@strict` (huggingface_hub), at construction and on assignment:
    a "false" string for a bool flag was truthy and switched the feature on."""
    for name in names:
        value = getattr(config, name)
        if not _is_number(value) or value <= 0:
            raise ValueError(f"`{name}` must be a finite number > 0, got {value!r} ({type(value).__name__}).")


@strict(accept_kwargs=True)
class SMTTeacherConfig(PreTrainedConfig):
    r"""Configuration of [`SMTTeacherModel`]: a bidirectional encoder with K learned register tokens that
    compresses a context into a memory (B, K, d), and a causal decoder that predicts the future from it.

    Args:
        vocab_size (`int`, defaults to 256): number of token ids (256 = bytes / 8-bit pixels).
        hidden_size (`int`, defaults to 256): model width d, shared by encoder, decoder and memory tokens.
        memory_tokens (`int`, defaults to 16): K, the number of memory (register) tokens; memory size Z = K * d.
        num_encoder_layers (`int`, defaults to 8): depth of the bidirectional encoder E.
        num_decoder_layers (`int`, defaults to 4): depth of the causal decoder D (and of the student readout
            that is initialised from it).
        num_attention_heads (`int`, defaults to 8): attention heads; must divide `hidden_size`.
        intermediate_size (`int`, *optional*): width of the GELU MLP in each block; defaults to 4 * hidden_size.
        rope_theta (`float`, defaults to 10000.0): base of the rotary position embeddings.
        max_context_length (`int`, defaults to 256): Tc, the longest context the encoder reads; longer contexts
            are truncated to their last Tc tokens by the trainer/collator.
        dropout (`float`, defaults to 0.0): dropout on attention and MLP outputs.
        initializer_range (`float`, *optional*): std of the normal init of linear and embedding weights;
            defaults to hidden_size ** -0.5 (fan-in scaling). The GPT-2 value 0.02 suits widths near 768; at
            width 64 it left the needle-retrieval teacher at chance for 1,000+ steps where 0.125 solved it
            in 300.
        rms_norm_eps (`float`, defaults to 1e-6): epsilon of the RMS norms (and of the memory normalisation).
        tie_word_embeddings (`bool`, defaults to False): tie the decoder head to the token embedding.
        encoder_causal (`bool`, defaults to False): the causal-context encoder variant: context tokens attend
            only to earlier tokens (registers still see the whole context), so `encode_prefixes(x)` yields the
            memory of every prefix of x in one pass and SMT can supervise every transition of a sequence
            (`SMTTrainingArguments.smt_all_prefixes`). Measured, not the default: see the README.
        use_cache (`bool`, defaults to False): unused by the teacher (it keeps no state between calls); kept for the
            `PreTrainedConfig` interface.
        pad_token_id, bos_token_id, eos_token_id (`int`, *optional*; eos may be a list of ints): special token ids,
            set from a tokenizer (the byte tokenizer pads with byte 0 and adds no bos/eos);
            `SMTRecurrentConfig.from_teacher` carries them over.
    """

    model_type = "smt_teacher"

    vocab_size: int = 256
    hidden_size: int = 256
    memory_tokens: int = 16
    num_encoder_layers: int = 8
    num_decoder_layers: int = 4
    num_attention_heads: int = 8
    intermediate_size: int | None = None
    rope_theta: float | int = 10000.0
    max_context_length: int = 256
    encoder_causal: bool = False
    dropout: float | int = 0.0
    initializer_range: float | int | None = None
    rms_norm_eps: float | int = 1e-6
    use_cache: bool = False
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        self.validate_architecture()
        self.fill_defaults()
        _check_weights_file(kwargs)
        super().__post_init__(**kwargs)

    def fill_defaults(self):
        """The sizes left None take their defaults (at construction, and when a model is built from the config)."""
        if self.initializer_range is None:
            self.initializer_range = self.hidden_size**-0.5
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size

    def validate_architecture(self):
        """ValueError naming the field for a value the model cannot be built with (None: a default, see
        `fill_defaults`). Runs at construction, when a model is built from the config (a value set later:
        `from_pretrained(..., key=value)`, assignment), and in `validate()` / `save_pretrained`, which raise it
        wrapped in huggingface_hub's StrictDataclassClassValidationError."""
        super().validate_architecture()
        _check_positive("vocab_size", self.vocab_size, 2)
        _check_positive("hidden_size", self.hidden_size)
        _check_positive("memory_tokens", self.memory_tokens)
        _check_positive("num_encoder_layers", self.num_encoder_layers)
        _check_positive("num_decoder_layers", self.num_decoder_layers)
        _check_positive("max_context_length", self.max_context_length)
        _check_heads(self.hidden_size, self.num_attention_heads)
        _check_dropout(self.dropout)
        if self.intermediate_size is not None:
            _check_positive("intermediate_size", self.intermediate_size)
        _check_positive_numbers(self, "rope_theta", "rms_norm_eps",
                                *(("initializer_range",) if self.initializer_range is not None else ()))


@strict(accept_kwargs=True)
class SMTMemoryEncoderConfig(PreTrainedConfig):
    r"""Configuration of the memory encoder a student carries for parallel prefill (`SMTPrefillEncoder`, a copy of its
    teacher's encoder): the sub-config `SMTRecurrentConfig.prefill_encoder`. Only what the encoder does not share with
    the student is here; width, K, vocabulary, heads, rope_theta, rms_norm_eps and dropout are the student's (the
    memory it computes is a student state). Built from a teacher by `from_teacher`, which
    `SMTRecurrentForCausalLM.add_prefill_encoder(teacher)` calls; the defaults are `SMTTeacherConfig`'s.

    Args:
        num_layers (`int`, defaults to 8): depth of the encoder (the teacher's `num_encoder_layers`).
        context_length (`int`, defaults to 256): Tc, how many of a prompt's last tokens the encoder reads (at most the
            teacher's `max_context_length`; use the Tc SMT trained with).
        intermediate_size (`int`, *optional*): FFN width of the encoder (the teacher's `intermediate_size`); defaults to
            4 * the student's hidden_size (set by `SMTRecurrentConfig`).
        causal (`bool`, defaults to False): a causal-context encoder (copied from a teacher with `encoder_causal=True`).
    """

    model_type = "smt_memory_encoder"

    num_layers: int = 8
    context_length: int = 256
    intermediate_size: int | None = None
    causal: bool = False

    def __post_init__(self, **kwargs):
        self.validate_architecture()
        _check_weights_file(kwargs)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """As `SMTTeacherConfig.validate_architecture`."""
        super().validate_architecture()
        _check_positive("num_layers", self.num_layers)
        _check_positive("context_length", self.context_length)
        if self.intermediate_size is not None:
            _check_positive("intermediate_size", self.intermediate_size)

    @classmethod
    def from_teacher(cls, teacher_config: SMTTeacherConfig, context_length: int | None = None) -> "SMTMemoryEncoderConfig":
        """The encoder of `teacher_config` reading the last `context_length` tokens (default: its `max_context_length`).
        Raises ValueError unless 1 <= context_length <= max_context_length."""
        Tc = int(context_length or teacher_config.max_context_length)
        if not 1 <= Tc <= teacher_config.max_context_length:
            raise ValueError(f"context_length must be in [1, {teacher_config.max_context_length}] (the teacher's "
                             f"max_context_length), got {Tc}.")
        return cls(num_layers=teacher_config.num_encoder_layers, context_length=Tc,
                   intermediate_size=teacher_config.intermediate_size, causal=bool(teacher_config.encoder_causal))


# the four flat fields that held the prefill encoder's settings before the `prefill_encoder` sub-config (config.json
# files written before it carry them; `SMTRecurrentConfig` reads them into the sub-config)
LEGACY_PREFILL_KEYS = {"prefill_layers": "num_layers", "prefill_context_length": "context_length",
                       "prefill_intermediate_size": "intermediate_size", "prefill_causal": "causal"}


def _legacy_prefill_encoder(legacy: dict[str, Any]) -> SMTMemoryEncoderConfig | None:
    """The sub-config that the old flat `prefill_*` keys describe (None for `prefill_layers=0`, "no encoder"). A
    missing `prefill_context_length` is the old default 0, which the sub-config refuses (ValueError) as the old
    config did, rather than a silent Tc of 256."""
    if not legacy.get("prefill_layers"):
        return None
    legacy = {"prefill_context_length": 0, **legacy}
    return SMTMemoryEncoderConfig(**{new: legacy[old] for old, new in LEGACY_PREFILL_KEYS.items() if old in legacy})


@strict(accept_kwargs=True)
class SMTRecurrentConfig(PreTrainedConfig):
    r"""Configuration of the recurrent student [`SMTRecurrentForCausalLM`]: token embedding, an updater
    m_{t+1} = f(m_t, x_{t+1}) from the backbone registry, a causal-Transformer readout over the memory
    tokens, and a stored initial memory. Its state is the memory only: (B, K, d) whatever the length read.

    Args:
        backbone (`str`, defaults to "transformer"): the updater f, one of "transformer" (bidirectional
            Transformer over [m_t ; embed(x)], as the reference), "mlp" (residual MLP over the flattened
            memory) or "gru" (GRU cell from nn.Linear whose hidden state is the flattened memory).
        vocab_size (`int`, defaults to 256): number of token ids.
        hidden_size (`int`, defaults to 256): width d of memory tokens and token embeddings.
        memory_tokens (`int`, defaults to 16): K, the number of memory tokens.
        num_attention_heads (`int`, defaults to 8): heads of the transformer updater and of the readout.
        updater_layers (`int`, defaults to 8): depth of the updater (transformer blocks or residual MLP
            blocks; ignored by "gru", which is one cell).
        updater_intermediate_size (`int`, *optional*): FFN width of the transformer updater, or the hidden
            width of the MLP updater; defaults to 4 * hidden_size.
        readout_layers (`int`, defaults to 4): depth of the causal readout Transformer; set it equal to the
            teacher's `num_decoder_layers` so SMT can initialise the readout from the decoder.
        readout_intermediate_size (`int`, *optional*): FFN width of the readout; defaults to 4 * hidden_size.
        rope_theta (`float`, defaults to 10000.0): base of the rotary position embeddings.
        dropout (`float`, defaults to 0.0): dropout in the updater and readout.
        initializer_range (`float`, *optional*): std of the normal init; defaults to hidden_size ** -0.5.
        rms_norm_eps (`float`, defaults to 1e-6): epsilon of RMS norms and memory normalisation.
        use_cache (`bool`, defaults to True): return the memory cache from `forward`.
        prefill (`str`, defaults to "recurrent"): how `forward` turns a prompt into the state when it starts with
            no cache and no memory: "recurrent" (the RNN reads it token by token) or "parallel" (the carried
            teacher encoder reads the prompt's last `prefill_encoder.context_length` tokens in one pass; needs
            `prefill_encoder`).
        prefill_encoder ([`SMTMemoryEncoderConfig`] or `dict`, *optional*): the carried prefill encoder (depth,
            context length Tc, FFN width, causal); None = none. Set by
            `SMTRecurrentForCausalLM.add_prefill_encoder(teacher)`. A config.json written before this sub-config
            existed holds the flat keys `prefill_layers`, `prefill_context_length`, `prefill_intermediate_size` and
            `prefill_causal` instead; they load into it (`prefill_layers=0`: None).
        tie_word_embeddings (`bool`, defaults to False): tie the readout head to the token embedding.
        pad_token_id, bos_token_id, eos_token_id (`int`, *optional*; eos may be a list of ints): special token ids,
            set from a tokenizer (the byte tokenizer pads with byte 0 and adds no bos/eos); `from_teacher` copies the
            teacher's.
    """

    model_type = "smt_recurrent"
    sub_configs_defaults = {"prefill_encoder": SubConfigSpec(config_class=SMTMemoryEncoderConfig, optional=True)}

    backbone: str = "transformer"
    vocab_size: int = 256
    hidden_size: int = 256
    memory_tokens: int = 16
    num_attention_heads: int = 8
    updater_layers: int = 8
    updater_intermediate_size: int | None = None
    readout_layers: int = 4
    readout_intermediate_size: int | None = None
    rope_theta: float | int = 10000.0
    dropout: float | int = 0.0
    initializer_range: float | int | None = None
    rms_norm_eps: float | int = 1e-6
    use_cache: bool = True
    prefill: str = "recurrent"
    prefill_encoder: SMTMemoryEncoderConfig | dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        legacy = {key: kwargs.pop(key) for key in LEGACY_PREFILL_KEYS if key in kwargs}
        if legacy:
            if self.prefill_encoder is not None:
                raise ValueError(f"Got both `prefill_encoder` and the old flat keys {sorted(legacy)}: they describe the "
                                 "same encoder; pass `prefill_encoder` only.")
            self.prefill_encoder = _legacy_prefill_encoder(legacy)
        if isinstance(self.prefill_encoder, dict):
            self.prefill_encoder = SMTMemoryEncoderConfig(**self.prefill_encoder)
        elif self.prefill_encoder is not None:  # a copy: the defaults below must not write into the caller's object
            self.prefill_encoder = copy.deepcopy(self.prefill_encoder)
        self.validate_architecture()
        self.fill_defaults()
        _check_weights_file(kwargs)
        super().__post_init__(**kwargs)

    def fill_defaults(self):
        """As `SMTTeacherConfig.fill_defaults` (the prefill encoder's FFN width included)."""
        if self.initializer_range is None:
            self.initializer_range = self.hidden_size**-0.5
        if self.updater_intermediate_size is None:
            self.updater_intermediate_size = 4 * self.hidden_size
        if self.readout_intermediate_size is None:
            self.readout_intermediate_size = 4 * self.hidden_size
        if isinstance(self.prefill_encoder, SMTMemoryEncoderConfig) and self.prefill_encoder.intermediate_size is None:
            self.prefill_encoder.intermediate_size = 4 * self.hidden_size

    def validate_architecture(self):
        """As `SMTTeacherConfig.validate_architecture` (the prefill encoder's config included)."""
        super().validate_architecture()
        if self.backbone not in BACKBONES:
            raise ValueError(f"Unknown backbone {self.backbone!r}; choose one of {list(BACKBONES)}.")
        _check_positive("vocab_size", self.vocab_size, 2)
        _check_positive("hidden_size", self.hidden_size)
        _check_positive("memory_tokens", self.memory_tokens)
        _check_positive("updater_layers", self.updater_layers)
        _check_positive("readout_layers", self.readout_layers)
        _check_heads(self.hidden_size, self.num_attention_heads)
        _check_dropout(self.dropout)
        for name in ("updater_intermediate_size", "readout_intermediate_size"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        _check_positive_numbers(self, "rope_theta", "rms_norm_eps",
                                *(("initializer_range",) if self.initializer_range is not None else ()))
        check_prefill(self.prefill)
        if isinstance(self.prefill_encoder, SMTMemoryEncoderConfig):
            self.prefill_encoder.validate_architecture()
        if self.prefill == "parallel" and self.prefill_encoder is None:
            raise ValueError("prefill='parallel' needs a prefill encoder: call `student.add_prefill_encoder(teacher)` "
                             "(or set `prefill_encoder`), or use prefill='recurrent'.")

    @property
    def memory_size(self) -> int:
        """Z = K * d, the number of floats in one sequence's state."""
        return self.memory_tokens * self.hidden_size

    @classmethod
    def from_teacher(cls, teacher_config: SMTTeacherConfig, backbone: str = "transformer", **kwargs) -> "SMTRecurrentConfig":
        """A student config matching a teacher (same V, d, K, heads; readout depth = decoder depth), so that
        teacher memories are valid student states and the readout can start from the teacher decoder. The pad /
        bos / eos ids (set from a tokenizer) carry over too."""
        base = dict(
            backbone=backbone,
            vocab_size=teacher_config.vocab_size,
            pad_token_id=teacher_config.pad_token_id,
            bos_token_id=teacher_config.bos_token_id,
            eos_token_id=teacher_config.eos_token_id,
            hidden_size=teacher_config.hidden_size,
            memory_tokens=teacher_config.memory_tokens,
            num_attention_heads=teacher_config.num_attention_heads,
            readout_layers=teacher_config.num_decoder_layers,
            readout_intermediate_size=teacher_config.intermediate_size,
            rope_theta=teacher_config.rope_theta,
            rms_norm_eps=teacher_config.rms_norm_eps,
            initializer_range=teacher_config.initializer_range,
        )
        base.update(kwargs)
        return cls(**base)


__all__ = ["SMTTeacherConfig", "SMTRecurrentConfig", "SMTMemoryEncoderConfig", "BACKBONES", "PREFILL_MODES", "check_prefill"]
