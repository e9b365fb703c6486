"""The teacher's Transformers contract on inputs a break-it pass found mishandled: config values set after
construction, right-padded contexts, arguments forward() ignored, decode() inputs, the adapter-folder message and
attn_implementation. Each test fails on the code before the fix."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoModel

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherConfig, SMTTeacherModel

CFG = dict(vocab_size=16, hidden_size=32, memory_tokens=2, num_attention_heads=4, num_encoder_layers=1,
           num_decoder_layers=1, intermediate_size=64, max_context_length=16)


def teacher(**kw):
    torch.manual_seed(0)
    return SMTTeacherModel(SMTTeacherConfig(**{**CFG, **kw})).eval()


@pytest.mark.parametrize("override,message", [({"rms_norm_eps": -1.0}, "rms_norm_eps"),
                                              ({"num_attention_heads": 5}, "divisible by `num_attention_heads`"),
                                              ({"memory_tokens": 0}, "memory_tokens")])
def test_config_values_set_after_construction_are_checked(tmp_path, override, message):
    """`from_pretrained(path, key=value)` and assignment bypassed the constructor's checks: rms_norm_eps=-1 gave nan
    memories, 5 heads a reshape error, and a bad value could be saved to a config.json that then refused to load."""
    teacher().save_pretrained(tmp_path / "t")
    with pytest.raises(ValueError, match=message):
        AutoModel.from_pretrained(tmp_path / "t", **override)
    config = SMTTeacherConfig(**CFG)
    setattr(config, *next(iter(override.items())))
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        config.validate()
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        config.save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match=message):
        SMTTeacherModel(config)
    student = SMTRecurrentConfig.from_teacher(SMTTeacherConfig(**CFG))
    setattr(student, *next(iter(override.items())))
    with pytest.raises(ValueError, match=message):
        SMTRecurrentForCausalLM(student)


@pytest.mark.parametrize("causal", [False, True])
def test_right_padding_and_holes_give_the_memory_of_the_tokens_alone(causal):
    """Right padding moved the registers' rotary positions away from the tokens: another memory (by 2.5), silently.
    Every padding layout now gives the unpadded context's memory."""
    t = teacher(encoder_causal=causal)
    ids = torch.tensor([[3, 5, 9, 4]])
    ref = t.encode(ids)
    for padded, mask in (([0, 0, 3, 5, 9, 4], [0, 0, 1, 1, 1, 1]), ([3, 5, 9, 4, 0, 0], [1, 1, 1, 1, 0, 0]),
                         ([3, 5, 0, 9, 4, 0], [1, 1, 0, 1, 1, 0])):
        torch.testing.assert_close(t.encode(torch.tensor([padded]), torch.tensor([mask])), ref, atol=1e-5, rtol=0)
    batch = t.encode(torch.tensor([[3, 5, 9, 4, 0, 0], [0, 0, 3, 5, 9, 4]]), torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]))
    torch.testing.assert_close(batch, ref.expand(2, -1, -1), atol=1e-5, rtol=0)


def test_forward_refuses_arguments_it_would_ignore():
    t, x = teacher(), torch.randint(0, 16, (1, 5))
    with pytest.raises(TypeError, match=r"decoder_input_ids.*\(the future to decode goes in `future_ids`"):
        t(x, decoder_input_ids=torch.randint(0, 16, (1, 3)))
    with pytest.raises(TypeError, match="attention_maks"):
        t(x, attention_maks=torch.ones(1, 5, dtype=torch.long))
    for name, value in (("inputs_embeds", torch.randn(1, 5, 32)), ("position_ids", torch.arange(5)[None])):
        with pytest.raises(TypeError, match=name):
            t(x, **{name: value})
    # what tokenizers and PEFT's feature-extraction wrapper pass still works
    out = t(x, token_type_ids=torch.zeros_like(x), inputs_embeds=None, output_attentions=False, return_dict=True)
    torch.testing.assert_close(out.memory, t(x).memory)
    with pytest.raises(TypeError, match="token_type_ids"):
        t(x, token_type_ids=torch.ones_like(x))


def test_forward_scales_the_loss_by_num_items_in_batch():
    """transformers' Trainer passes num_items_in_batch under gradient accumulation: sum / that count (was ignored)."""
    t, x = teacher(), torch.randint(0, 16, (2, 5))
    fut = torch.randint(0, 16, (2, 4))
    labels = fut.clone()
    labels[0, :2] = -100
    mean = t(x, future_ids=fut, labels=labels).loss
    assert torch.allclose(t(x, future_ids=fut, labels=labels, num_items_in_batch=12).loss, mean * 6 / 12)


def test_decode_checks_its_future_ids():
    t = teacher()
    memory = t.encode(torch.randint(0, 16, (2, 5)))
    for bad in (torch.randint(0, 16, (3, 4)), torch.tensor([1, 2])):
        with pytest.raises(ValueError, match=r"`future_ids` must be \(batch, Tf\) with the memory's batch size 2"):
            t.decode(memory, bad)
    torch.testing.assert_close(t.decode(memory, torch.zeros(2, 0, dtype=torch.long)), t.decode(memory))


def test_adapter_folder_message_names_the_class_called(tmp_path):
    from peft import LoraConfig, get_peft_model

    get_peft_model(teacher(), LoraConfig(r=4, target_modules=["qkv"])).save_pretrained(tmp_path)
    cfg = tmp_path / "adapter_config.json"
    cfg.write_text(cfg.read_text().replace('"base_model_name_or_path": null', '"base_model_name_or_path": ""'))
    with pytest.raises(OSError, match=r"PeftModel.from_pretrained\(SMTTeacherModel.from_pretrained\(base\)"):
        SMTTeacherModel.from_pretrained(tmp_path)


def test_attn_implementation_eager_is_refused(tmp_path):
    """'eager' was recorded in the config and ignored (attention always ran in SDPA)."""
    teacher().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="attn_implementation='eager' is not supported by SMTTeacherModel"):
        SMTTeacherModel.from_pretrained(tmp_path, attn_implementation="eager")
    assert SMTTeacherModel.from_pretrained(tmp_path, attn_implementation="sdpa").config._attn_implementation == "sdpa"


def test_review_follow_ups():
    """None set after construction takes the default when a model is built (it failed inside torch); use_cache is
    accepted (no cache); an empty future of another batch size is refused like any other."""
    config = SMTTeacherConfig(**CFG)
    config.intermediate_size, config.initializer_range = None, None
    t = SMTTeacherModel(config)
    assert t.config.intermediate_size == 4 * CFG["hidden_size"] and t.config.initializer_range == 32**-0.5
    x = torch.randint(0, 16, (2, 5))
    torch.testing.assert_close(t(x, use_cache=False).logits, t(x).logits)
    with pytest.raises(ValueError, match="memory's batch size 2"):
        t.decode(t.encode(x), torch.zeros(3, 0, dtype=torch.long))
