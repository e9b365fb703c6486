"""Data layer: synthetic tasks, real byte/pixel streams, padding, window functions and the split sampler.

Public API::

    make_task, list_tasks, task_vocab_size          # synthetic tasks (tasks.py)
    load_text, load_mnist, load_sketches,           # real data, hub or offline (streams.py)
    pixels_to_image, stream_windows
    SMTDataCollator                                 # pads sequence batches (collator.py)
    prefix_contexts, smt_windows                    # pure window functions (windows.py)
    SplitSampler                                    # SMT split points, drawn in the training step (sampling.py)
    load_text_dataset, load_tokenizer,              # any `datasets` corpus + any HF tokenizer, packed windows
    tokenizer_model_fields, TokenizedText           # (text_dataset.py)
"""

from .collator import SMTDataCollator
from .sampling import SplitSampler
from .streams import TextData, load_mnist, load_sketches, load_text, pixels_to_image, stream_windows
from .tasks import IGNORE_INDEX, list_tasks, make_task, task_vocab_size
from .text_dataset import TokenizedText, load_text_dataset, load_tokenizer, tokenizer_model_fields
from .windows import prefix_contexts, smt_windows

__all__ = [
    "IGNORE_INDEX",
    "make_task",
    "list_tasks",
    "task_vocab_size",
    "TextData",
    "load_text",
    "load_mnist",
    "load_sketches",
    "pixels_to_image",
    "stream_windows",
    "SMTDataCollator",
    "prefix_contexts",
    "smt_windows",
    "SplitSampler",
    "TokenizedText",
    "load_text_dataset",
    "load_tokenizer",
    "tokenizer_model_fields",
]
