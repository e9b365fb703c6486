"""LoRA on the recurrent student with PEFT (and what `SMTTrainer` needs to train a PEFT student: `is_peft_model`,
`has_adapter_layers`, `check_peft_student`, `load_adapter_checkpoint`).

PEFT has no default target mapping for `smt_recurrent`, so the target modules are given explicitly: a
regex (PEFT full-matches a string `target_modules` against module names) restricted to the updater
`model.updater...` and, optionally, the readout Transformer `readout_head.decoder...`. The per-backbone
layer names come from `smt_hf.backbones.LORA_TARGET_MODULES`.

    from peft import get_peft_model
    peft_model = get_peft_model(student, lora_config_for(student, r=8))
    peft_model.generate(ids, max_new_tokens=32)     # the memory cache is passed through unchanged
    merged = peft_model.merge_and_unload()           # a plain SMTRecurrentForCausalLM again

`generate()` through `PeftModelForCausalLM` (task_type "CAUSAL_LM") and through a bare `PeftModel`
(task_type None) both hand our `cache` argument to the student untouched: PEFT only rewrites
`past_key_values` / attention masks for prompt-learning methods, never for LoRA.
"""

from __future__ import annotations

import os
import re

from torch import nn

from .backbones import LORA_TARGET_MODULES

UPDATER_PREFIX = "model.updater"
READOUT_PREFIX = "readout_head.decoder"
# The readout is a TransformerStack: same linear names as the transformer updater.
READOUT_TARGET_MODULES = LORA_TARGET_MODULES["transformer"]


def _prefix_regex(prefix: str, names: list[str]) -> str:
    alternatives = "|".join(re.escape(n) for n in names)
    return rf"{re.escape(prefix)}\.(?:.*\.)?(?:{alternatives})"


def lora_target_regex(backbone: str, include_readout: bool = False) -> str:
    """The `target_modules` regex for one backbone (names relative to `SMTRecurrentForCausalLM`)."""
    if backbone not in LORA_TARGET_MODULES:
        raise ValueError(f"Unknown backbone {backbone!r}; choose one of {sorted(LORA_TARGET_MODULES)}.")
    parts = [_prefix_regex(UPDATER_PREFIX, LORA_TARGET_MODULES[backbone])]
    if include_readout:
        parts.append(_prefix_regex(READOUT_PREFIX, READOUT_TARGET_MODULES))
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def lora_target_names(model, include_readout: bool = False) -> list[str]:
    """The full names of the nn.Linear modules `lora_config_for(model, ...)` targets (for checks and logs)."""
    pattern = re.compile(lora_target_regex(_backbone(model), include_readout))
    return [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and pattern.fullmatch(name)]


def _backbone(model) -> str:
    config = getattr(model, "config", None)
    backbone = getattr(config, "backbone", None)
    if backbone is None or not hasattr(model, "readout_head"):
        raise ValueError(
            f"lora_config_for expects an SMTRecurrentForCausalLM (the student), got {type(model).__name__}. "
            "For a PeftModel, pass `peft_model.get_base_model()`. For the teacher, use LoraConfig(target_modules="
            "list(smt_hf.backbones.LORA_TARGET_MODULES['transformer']), task_type=None) (README, Ecosystem)."
        )
    return backbone


def is_peft_model(model) -> bool:
    """True for a PEFT wrapper (`get_peft_model(...)`'s result, `PeftModel.from_pretrained(...)`'s)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def has_adapter_layers(model) -> bool:
    """True when PEFT tuner layers (LoRA, ...) are injected into `model`'s modules: a PEFT wrapper, or the model
    `get_base_model()` returns from one. Such a model's `save_pretrained` writes the adapter-wrapped keys
    (`...base_layer.weight`, `...lora_A...`), which a plain `from_pretrained` does not load."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def lora_config_for(model, r: int = 8, alpha: int = 16, include_readout: bool = False, **kwargs):
    """A `peft.LoraConfig` targeting the student's updater (and the readout when `include_readout`).

    Args:
        model: the `SMTRecurrentForCausalLM` to adapt (its backbone picks the layer names).
        r, alpha: LoRA rank and `lora_alpha`.
        include_readout: also adapt the readout Transformer's attention/MLP linears.
        **kwargs: any other `LoraConfig` field (`lora_dropout`, `init_lora_weights`, `modules_to_save`, ...);
            `task_type` defaults to "CAUSAL_LM" (pass `task_type=None` for a bare `PeftModel`).
    Raises:
        ValueError if the model is not a student or no linear layer matches.
    """
    from peft import LoraConfig

    if "target_modules" in kwargs:
        raise ValueError("lora_config_for sets `target_modules` itself; build a LoraConfig directly to choose your own.")
    regex = lora_target_regex(_backbone(model), include_readout)
    if not lora_target_names(model, include_readout):
        raise ValueError(f"No nn.Linear in {type(model).__name__} matches {regex!r}; is this an SMT student?")
    kwargs.setdefault("task_type", "CAUSAL_LM")
    return LoraConfig(r=r, lora_alpha=alpha, target_modules=regex, **kwargs)


def check_peft_student(peft_model, args) -> None:
    """ValueError where `SMTTrainer` cannot train a PEFT student and save it as an adapter (`args`: its
    `SMTTrainingArguments`; FSDP / DeepSpeed from accelerate's config are checked by the trainer once built)."""
    if list(peft_model.peft_config) != ["default"]:
        raise ValueError(f"SMTTrainer trains a PeftModel with one adapter named 'default' (get_peft_model's), which "
                         f"its checkpoints hold in student/; this one has {list(peft_model.peft_config)}. Build it "
                         "with get_peft_model(student, config) and no other adapter.")
    if args.push_to_hub:
        raise ValueError("push_to_hub=True with a PEFT student: SMTTrainer pushes whole students; push the adapter "
                         "after training with trainer.peft_student.push_to_hub(repo_id).")
    if args.mode in ("smt", "joint"):
        raise ValueError(f"A PEFT student is trained in mode 'dmt' or 'bptt', not {args.mode!r}: in smt/joint the "
                         "student's readout and m_0 are copied from the teacher at every step, outside the adapter "
                         "its checkpoints would hold. Run SMT on the full student (merge_and_unload() first), then "
                         "adapt it with DMT or BPTT.")
    if args.fsdp or args.deepspeed:
        raise ValueError("A PEFT student under FSDP or DeepSpeed is not supported by SMTTrainer: train the adapter "
                         "on one process (or DDP), or the full student.")


def load_adapter_checkpoint(peft_model, path: str) -> None:
    """An SMTTrainer checkpoint's student adapter (`<checkpoint>/student/adapter_model.safetensors`) into
    `peft_model` (strict: every adapter weight, no other key); ValueError naming what does not fit."""
    import safetensors.torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if not os.path.isfile(path):
        raise ValueError(f"Can't find {path}: this trainer's student is a PeftModel, so its checkpoint holds the "
                         "adapter; this one does not (a checkpoint of the full student? load it with "
                         "from_pretrained and train without resume_from_checkpoint).")
    state = safetensors.torch.load_file(path, device="cpu")
    expected = set(get_peft_model_state_dict(peft_model))
    if set(state) != expected:
        raise ValueError(f"{path} does not fit this PeftModel's adapter (missing: {sorted(expected - set(state))[:3]}, "
                         f"unexpected: {sorted(set(state) - expected)[:3]}): build it with the adapter config the "
                         "checkpoint was trained with.")
    set_peft_model_state_dict(peft_model, state)


__all__ = ["lora_config_for", "lora_target_regex", "lora_target_names", "is_peft_model", "has_adapter_layers",
           "check_peft_student", "load_adapter_checkpoint"]
