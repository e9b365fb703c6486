"""What the teacher and the student share: the `PreTrainedModel` base (all weight init, in one place) and the input
validators whose errors name the fix. The student imports this module, never the teacher's."""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import PreTrainedModel

from .modeling_encoder import MemoryEncoder
from .modeling_layers import RMSNorm


def check_token_ids(input_ids: torch.Tensor, vocab_size: int, name: str = "input_ids") -> None:
    """Raise a clear error for ids outside [0, vocab_size) (an embedding lookup would crash or, on GPU,
    assert without saying which input was wrong)."""
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold integer token ids, got dtype {input_ids.dtype}; convert with `.long()`.")
    if input_ids.numel() == 0 or torch.compiler.is_compiling():
        return
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(
            f"`{name}` holds token ids in [{lo}, {hi}] but the model's vocab_size is {vocab_size}: ids must be in "
            f"[0, {vocab_size - 1}]. Use the matching tokenizer, or build the config with a larger `vocab_size`."
        )


def check_attention_mask(attention_mask: torch.Tensor, batch: int, length: int) -> None:
    """An attention mask must be (batch, >= length): its last `length` columns cover the tokens read."""
    if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] < length:
        raise ValueError(f"`attention_mask` must be (batch, >= length) = ({batch}, >={length}), got "
                         f"{tuple(attention_mask.shape)}.")


def check_memory(memory: torch.Tensor, memory_tokens: int, hidden_size: int) -> None:
    if memory.dim() != 3 or memory.shape[1:] != (memory_tokens, hidden_size):
        raise ValueError(
            f"memory must have shape (batch, memory_tokens={memory_tokens}, hidden_size={hidden_size}), got "
            f"{tuple(memory.shape)}. Memories come from `teacher.encode(...)` or `student.initial_memory(batch)`."
        )


def _adapter_base(folder: str):
    """The `base_model_name_or_path` of a PEFT adapter folder's adapter_config.json (None when unset)."""
    import json

    try:
        with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as f:
            return json.load(f).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None


def _check_local_folder(path: str, subfolder: str | None, model_class: str = "SMTRecurrentForCausalLM") -> None:
    """OSError naming the fix for a local folder `from_pretrained` cannot (or must not) load: pickled weights only
    (`pytorch_model*.bin`, never unpickled), a PEFT adapter that names no base model (an SMTTrainer checkpoint's
    `student/`; transformers loads one that names its base), or an SMTTrainer checkpoint / output folder itself."""
    sub = os.path.join(path, subfolder) if subfolder else path
    names = os.listdir(sub) if os.path.isdir(sub) else []
    pickled = sorted(n for n in names if n.startswith("pytorch_model") and n.endswith((".bin", ".bin.index.json")))
    if pickled and not any(n.startswith("model") and n.endswith((".safetensors", ".safetensors.index.json"))
                           for n in names):
        raise OSError(
            f"{sub} holds pickled weights only ({', '.join(pickled)}) and no model.safetensors: smt-hf loads "
            "safetensors checkpoints only (it never unpickles weights). If you trust the file, convert it "
            "once yourself (load its state dict, model.load_state_dict(...), model.save_pretrained(folder))"
        )
    if "adapter_config.json" in names and "config.json" not in names and not _adapter_base(sub):
        raise OSError(f"{sub} holds a PEFT adapter that names no base model: load it onto its base model, "
                      f"`PeftModel.from_pretrained({model_class}.from_pretrained(base), folder)`, "
                      "and `merge_and_unload()` it for a plain model.")
    parts = [n for n in ("student", "teacher") if os.path.isfile(os.path.join(sub, n, "config.json"))]
    if parts and "config.json" not in names:
        raise OSError(f"{sub} is an SMTTrainer checkpoint or output folder: load its "
                      f"{' or '.join(os.path.join(sub, n) for n in parts)} sub-folder.")


class SMTPreTrainedModel(PreTrainedModel):
    """Weight init shared by teacher and student (all of it here, with `torch.nn.init`).

    Activation checkpointing (`model.activation_checkpointing_enable()`, or `gradient_checkpointing=True` in the
    trainer) recomputes each Transformer block, residual MLP block and GRU cell in the backward pass: the encoder
    over a long Tc and the student's BPTT over a long T keep only the block inputs."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def __init__(self, config, *inputs, **kwargs):
        # the config's value checks again: a value set after it was built (`from_pretrained(path, key=value)`,
        # assignment) bypassed them (nan memories from rms_norm_eps=-1, a reshape error from 5 heads)
        getattr(config, "validate_architecture", lambda: None)()
        getattr(config, "fill_defaults", lambda: None)()
        super().__init__(config, *inputs, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, use_safetensors=None, **kwargs):
        """`PreTrainedModel.from_pretrained`, safetensors only: smt-hf never unpickles a checkpoint, so a folder or
        repo with only `pytorch_model.bin` is refused (transformers would read it with `torch.load`).

        Raises:
            ValueError: `use_safetensors=False`.
            OSError: no `model.safetensors` (or sharded safetensors index) in the folder or repo; for a local folder,
                see `_check_local_folder` (pickled weights only, an adapter naming no base, a checkpoint folder)."""
        if use_safetensors is False:
            raise ValueError(
                "smt-hf loads safetensors checkpoints only (it never unpickles weights): use_safetensors=False is not "
                "supported; leave it unset"
            )
        if pretrained_model_name_or_path is not None and os.path.isdir(os.fspath(pretrained_model_name_or_path)):
            _check_local_folder(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder"), cls.__name__)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, use_safetensors=True, **kwargs)

    def _check_and_adjust_attn_implementation(self, attn_implementation, is_init_check=False, allow_all_kernels=False):
        """As PreTrainedModel's, refusing "eager" (it was recorded and ignored): attention runs in torch's SDPA only."""
        if attn_implementation in ("eager", "paged|eager"):
            raise ValueError(f"attn_implementation={attn_implementation!r} is not supported by {type(self).__name__}: "
                             "its attention runs in torch's scaled_dot_product_attention only (attention weights are "
                             "not returned). Use attn_implementation='sdpa' (the default).")
        return super()._check_and_adjust_attn_implementation(attn_implementation, is_init_check, allow_all_kernels)

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        if isinstance(module, MemoryEncoder):  # the teacher itself, or the student's carried prefill encoder
            nn.init.normal_(module.registers, mean=0.0, std=std)
        self._init_extra(module, std)

    def _init_extra(self, module, std):  # subclasses add their own parameters here
        pass


def is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a `torch.distributed.tensor.DTensor` (an FSDP2 `fully_shard` parameter shard)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without public DTensors: no FSDP2 shards either
        return False
    return isinstance(tensor, DTensor)


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a DTensor (its shard), else the tensor itself."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def copy_full_(param: torch.Tensor, full: torch.Tensor) -> None:
    """param.copy_(full) for a full (unsharded) `full` of param's global shape, also when `param` is a DTensor shard
    (FSDP2): `full` is laid out as `param` (`distribute_tensor`: rank 0's values, scattered) and copied shard to shard.
    Every process must call it (a collective when `param` is a DTensor)."""
    full = full.to(device=param.device, dtype=param.dtype)
    if is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full, param.device_mesh, param.placements)
    param.copy_(full)


def call_with_constant_weights(module: nn.Module, *args, **kwargs):
    """`module(*args, **kwargs)` with every parameter of `module` held constant (detached): the gradient reaches the
    inputs only, never the weights through this call (`torch.func.functional_call`; a weight tied to one used
    elsewhere still learns from that other use). Used where a loss must train what produces a memory, not the
    read-out that scores it (`lambda_onestep_readout`). Activation checkpointing is off inside the call: a
    recomputation in backward would run after the real weights are back (a checkpoint error, or gradient into them).
    Not for FSDP-sharded modules."""
    from torch.func import functional_call

    layers = [m for m in module.modules() if getattr(m, "gradient_checkpointing", False)]
    for m in layers:
        m.gradient_checkpointing = False
    try:
        return functional_call(module, {n: p.detach() for n, p in module.named_parameters()}, args, kwargs)
    finally:
        for m in layers:
            m.gradient_checkpointing = True


__all__ = ["SMTPreTrainedModel", "call_with_constant_weights", "check_memory", "check_token_ids"]
