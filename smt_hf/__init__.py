"""smt-hf: Supervised Memory Training (SMT) and DAgger Memory Training (DMT) for nonlinear RNNs.

`import smt_hf` registers the configs, models and tokenizer with the transformers Auto classes, so
`AutoModelForCausalLM.from_pretrained(path)` loads a saved student with no remote code.

The models, configs, cache and tokenizer are imported eagerly; the training, data, evaluation, generation and
export API (`SMTTrainer`, `SMTTrainingArguments`, `make_task`, `export_for_hub`, ...) is importable from here too and
loaded on first use, as `transformers` does, so `import smt_hf` stays light (it never imports matplotlib: the plots
are in `smt_hf.viz`).
"""

import importlib

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from .cache import SMTMemoryCache
from .configuration_smt import SMTMemoryEncoderConfig, SMTRecurrentConfig, SMTTeacherConfig
from .modeling_recurrent import SMTRecurrentForCausalLM, SMTRecurrentModel
from .modeling_teacher import SMTTeacherModel
from .tokenization_smt import SMTByteTokenizer

__version__ = "0.1.0"  # the one version: pyproject.toml reads it (`dynamic = ["version"]`)

AutoConfig.register("smt_teacher", SMTTeacherConfig, exist_ok=True)
AutoConfig.register("smt_recurrent", SMTRecurrentConfig, exist_ok=True)
AutoModel.register(SMTTeacherConfig, SMTTeacherModel, exist_ok=True)
AutoModel.register(SMTRecurrentConfig, SMTRecurrentForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(SMTRecurrentConfig, SMTRecurrentForCausalLM, exist_ok=True)
AutoTokenizer.register(SMTRecurrentConfig, slow_tokenizer_class=SMTByteTokenizer, exist_ok=True)
AutoTokenizer.register(SMTTeacherConfig, slow_tokenizer_class=SMTByteTokenizer, exist_ok=True)

# public name -> submodule, imported on first attribute access (PEP 562)
_LAZY = {
    **dict.fromkeys(["SMTTrainer", "NonFiniteLossError"], ".trainer"),
    **dict.fromkeys(["SMTTrainingArguments", "MODES"], ".training_args"),
    **dict.fromkeys(["SMTTrainingModule", "make_student_standalone"], ".training_module"),
    **dict.fromkeys(["make_task", "list_tasks", "task_vocab_size", "stream_windows", "load_text", "TextData",
                     "load_mnist", "load_sketches", "SMTDataCollator", "IGNORE_INDEX"], ".data"),
    **dict.fromkeys(["evaluate_smt", "summarize"], ".evaluation"),
    **dict.fromkeys(["bptt_gradient_norms", "smt_gradient_norms", "complete_after_prefix", "bigram_bits",
                       "continuation_bits", "memory_spread"], ".analysis"),
    **dict.fromkeys(["TimeBudget", "Deadline"], ".callbacks"),
    **dict.fromkeys(["FastGenerator", "fast_generate", "compile_step", "restore_step"], ".fast"),
    **dict.fromkeys(["export_for_hub", "load_model"], ".hub.export"),
    **dict.fromkeys(["make_model_card"], ".hub"),
    **dict.fromkeys(["lora_config_for"], ".peft_utils"),
    **dict.fromkeys(["SMTRecurrentCausalLMOutput", "SMTRecurrentOutput"], ".modeling_recurrent"),
    **dict.fromkeys(["SMTTeacherOutput"], ".modeling_teacher"),
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "SMTTeacherConfig",
    "SMTRecurrentConfig",
    "SMTMemoryEncoderConfig",
    "SMTTeacherModel",
    "SMTRecurrentModel",
    "SMTRecurrentForCausalLM",
    "SMTMemoryCache",
    "SMTByteTokenizer",
    *_LAZY,
]
