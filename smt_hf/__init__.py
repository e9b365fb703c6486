"""smt-hf: Supervised Memory Training (SMT) and DAgger Memory Training (DMT) for nonlinear RNNs.

`import smt_hf` registers the configs, models and tokenizer with the transformers Auto classes, so
`AutoModelForCausalLM.from_pretrained(path)` loads a saved student with no remote code.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from .cache import SMTMemoryCache
from .configuration_smt import SMTRecurrentConfig, SMTTeacherConfig
from .modeling_recurrent import SMTRecurrentForCausalLM, SMTRecurrentModel
from .modeling_teacher import SMTTeacherModel
from .tokenization_smt import SMTByteTokenizer

__version__ = "0.1.0"

AutoConfig.register("smt_teacher", SMTTeacherConfig, exist_ok=True)
AutoConfig.register("smt_recurrent", SMTRecurrentConfig, exist_ok=True)
AutoModel.register(SMTTeacherConfig, SMTTeacherModel, exist_ok=True)
AutoModel.register(SMTRecurrentConfig, SMTRecurrentForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(SMTRecurrentConfig, SMTRecurrentForCausalLM, exist_ok=True)
AutoTokenizer.register(SMTRecurrentConfig, slow_tokenizer_class=SMTByteTokenizer, exist_ok=True)
AutoTokenizer.register(SMTTeacherConfig, slow_tokenizer_class=SMTByteTokenizer, exist_ok=True)

__all__ = [
    "SMTTeacherConfig",
    "SMTRecurrentConfig",
    "SMTTeacherModel",
    "SMTRecurrentModel",
    "SMTRecurrentForCausalLM",
    "SMTMemoryCache",
    "SMTByteTokenizer",
]
