"""Which generation-config settings `FastGenerator` (smt_hf/fast.py) implements, and the refusal of the others.

`FastGenerator` implements greedy and sampling decoding with temperature and top-k, eos / pad and min-length.
A generation config (the model's, or the one passed in) that sets anything else that changes the tokens or the
shape of `model.generate`'s output is refused with a ValueError naming the setting: an allow-list, so that a
setting transformers adds later is refused until it is checked, not silently ignored.
"""

from __future__ import annotations

import functools

__all__ = ["generation_setting", "unsupported_settings"]

# what FastGenerator reads from the config itself
IMPLEMENTED = {"do_sample", "temperature", "top_k", "eos_token_id", "pad_token_id", "min_new_tokens", "min_length"}
# settings that do not change the tokens FastGenerator returns for its explicit `max_new_tokens` (output format,
# lengths it is given explicitly, caching and compilation, bookkeeping), and renormalize_logits (a log-softmax after
# the processors: the same argmax and the same distribution)
NO_EFFECT = {"max_length", "max_new_tokens", "bos_token_id", "decoder_start_token_id", "use_cache", "output_attentions",
             "output_hidden_states", "output_scores", "output_logits", "return_dict_in_generate", "cache_implementation",
             "cache_config", "max_cache_len", "compile_config", "disable_compile", "continuous_batching_config",
             "transformers_version", "_from_model_config", "renormalize_logits", "low_memory", "early_stopping",
             "length_penalty", "assistant_confidence_threshold", "assistant_lookbehind", "target_lookbehind",
             "num_assistant_tokens", "num_assistant_tokens_schedule", "max_matching_ngram_size",
             "assistant_ensemble_weight"}  # (the last row: settings of an assistant, which the student refuses)
# sampling settings: transformers ignores them in greedy decoding
SAMPLING_ONLY = {"top_p", "typical_p", "min_p", "epsilon_cutoff", "eta_cutoff", "top_h"}
# values at which a setting changes nothing (None and empty containers too)
NO_OP = {"top_p": 1.0, "typical_p": 1.0, "min_p": 0.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
         "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
         "encoder_no_repeat_ngram_size": 0, "num_beams": 1, "num_beam_groups": 1, "diversity_penalty": 0.0,
         "num_return_sequences": 1, "guidance_scale": 1.0, "token_healing": False, "is_assistant": False,
         "use_mtp": False, "remove_invalid_values": False, "penalty_alpha": 0.0}


def generation_setting(gen, name: str, value):
    """An explicit value, else the generation config `gen`'s, else transformers' default (temperature 1.0, top_k
    50): what `model.generate(do_sample=True)` uses."""
    if value is not None:
        return value
    value = getattr(gen, name, None)
    if value is not None:
        return value
    try:
        from transformers import GenerationConfig

        return GenerationConfig._get_default_generation_params()[name]
    except (AttributeError, KeyError):  # older transformers: its documented defaults
        return {"temperature": 1.0, "top_k": 50}[name]


@functools.cache
def _known_settings() -> frozenset[str]:
    """The settings transformers' GenerationConfig defines."""
    from transformers import GenerationConfig

    return frozenset(GenerationConfig().to_dict())


def unsupported_settings(gen, do_sample: bool) -> list[str]:
    """`name=value` for each setting of the generation config `gen` (None: none) that would make `model.generate`
    return other tokens, or another number of rows, than FastGenerator: every setting that differs from
    transformers' defaults except those in IMPLEMENTED and NO_EFFECT, the sampling ones in greedy decoding, and
    no-op values (NO_OP, None, empty). Keys that `GenerationConfig` does not define (a Hub generation_config.json's
    `chat_format`, ...) are skipped: transformers ignores them too."""
    if gen is None:
        return []
    known = _known_settings()
    diff = gen.to_diff_dict() if hasattr(gen, "to_diff_dict") else dict(vars(gen))
    bad = []
    for name, value in sorted(diff.items()):
        if (name not in known or name in IMPLEMENTED or name in NO_EFFECT or name.startswith("_")
                or (name in SAMPLING_ONLY and not do_sample)):
            continue
        if value is None or (isinstance(value, (list, dict, tuple)) and not value) or value == NO_OP.get(name, ...):
            continue
        bad.append(f"{name}={value!r}")
    return bad
