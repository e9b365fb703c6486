"""LoRA adapters on the student (every backbone): effect, merge, save/reload, and generate with the memory cache."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny ops: one thread is ~100x faster than two on a loaded 2-core box
from conftest import BACKBONES, tiny_student_config, tiny_teacher_config  # noqa: E402
from peft import PeftModel, PeftModelForCausalLM, get_peft_model  # noqa: E402

from smt_hf import SMTMemoryCache, SMTRecurrentForCausalLM, SMTTeacherModel  # noqa: E402
from smt_hf.backbones import LORA_TARGET_MODULES  # noqa: E402
from smt_hf.peft_utils import lora_config_for, lora_target_names  # noqa: E402


def _student(backbone):
    torch.manual_seed(0)
    return SMTRecurrentForCausalLM(tiny_student_config(backbone)).eval()


def _lora(backbone, task_type="CAUSAL_LM", include_readout=False):
    base = _student(backbone)
    torch.manual_seed(1)  # init_lora_weights=False: random non-zero lora_B, so the adapter changes outputs
    config = lora_config_for(base, r=4, alpha=8, include_readout=include_readout, init_lora_weights=False, task_type=task_type)
    return get_peft_model(base, config).eval()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_targets_only_the_updater_unless_readout_asked(backbone):
    model = _student(backbone)
    names = lora_target_names(model)
    assert names and all(n.startswith("model.updater.") for n in names)
    assert {n.rsplit(".", 1)[1] for n in names} == set(LORA_TARGET_MODULES[backbone])
    with_readout = lora_target_names(model, include_readout=True)
    extra = set(with_readout) - set(names)
    assert extra and all(n.startswith("readout_head.decoder.") for n in extra)
    peft_model = get_peft_model(model, lora_config_for(model))
    adapted = {n.removeprefix("base_model.model.").rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_A" in n}
    assert adapted == set(names)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.parametrize("task_type", ["CAUSAL_LM", None], ids=["causal-lm", "bare-peftmodel"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_lora_changes_merges_and_generates_with_cache(backbone, task_type):
    peft_model = _lora(backbone, task_type, include_readout=backbone == "gru")
    assert isinstance(peft_model, PeftModelForCausalLM if task_type else PeftModel)
    x = torch.randint(0, 16, (2, 9))
    prompt = torch.randint(0, 16, (2, 4))
    with torch.no_grad():
        adapted = peft_model(input_ids=x).logits
        with peft_model.disable_adapter():
            plain = peft_model(input_ids=x).logits
        assert (adapted - plain).abs().max() > 1e-3  # the adapter does something
        assert torch.equal(plain, _student(backbone)(x).logits)  # and leaves the base weights alone

        # generate through the PEFT wrapper: the student's `cache` must reach every decode step
        seen = []
        hook = peft_model.get_base_model().register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append((kwargs["input_ids"].shape[1], kwargs.get("cache"))), with_kwargs=True
        )
        out = peft_model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
        hook.remove()
        assert [n for n, _ in seen] == [4] + [1] * 5  # prefill, then one token per step
        assert all(isinstance(c, SMTMemoryCache) for _, c in seen[1:])
        assert isinstance(out.cache, SMTMemoryCache) and out.cache.get_seq_length() == 9

        merged = peft_model.merge_and_unload()
        assert type(merged) is SMTRecurrentForCausalLM
        torch.testing.assert_close(merged(x).logits, adapted, rtol=1e-5, atol=1e-5)
        assert torch.equal(out.sequences, merged.generate(prompt, max_new_tokens=6, do_sample=False))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_adapter_save_and_reload_identical(backbone, tmp_path):
    peft_model = _lora(backbone)
    peft_model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "adapter_config.json").is_file()
    reloaded = PeftModel.from_pretrained(_student(backbone), tmp_path).eval()
    x = torch.randint(0, 16, (3, 7))
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=x).logits, peft_model(input_ids=x).logits)
        prompt = x[:, :3]
        assert torch.equal(
            reloaded.generate(input_ids=prompt, max_new_tokens=5, do_sample=False),
            peft_model.generate(input_ids=prompt, max_new_tokens=5, do_sample=False),
        )


@torch.no_grad()
def test_lora_on_the_teacher_saves_reloads_and_merges(tmp_path):
    """The README's teacher recipe: the transformer names, task_type=None (the teacher has no generate())."""
    from peft import LoraConfig

    def teacher():
        torch.manual_seed(0)
        return SMTTeacherModel(tiny_teacher_config()).eval()

    config = LoraConfig(r=4, target_modules=list(LORA_TARGET_MODULES["transformer"]), init_lora_weights=False)
    model = get_peft_model(teacher(), config).eval()
    x, fut = torch.randint(0, 16, (2, 6)), torch.randint(0, 16, (2, 4))
    out = model(input_ids=x, future_ids=fut).logits
    assert not torch.allclose(out, teacher()(x, future_ids=fut).logits)
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(teacher(), tmp_path).eval()
    assert torch.equal(reloaded(input_ids=x, future_ids=fut).logits, out)
    torch.testing.assert_close(reloaded.merge_and_unload()(x, future_ids=fut).logits, out, rtol=1e-5, atol=1e-5)


def test_lora_config_errors():
    student = _student("gru")
    with pytest.raises(ValueError, match="SMTRecurrentForCausalLM"):
        lora_config_for(student.model)
    with pytest.raises(ValueError, match="sets `target_modules` itself"):
        lora_config_for(student, target_modules=["x"])


def _peft_trainer_models():
    from test_trainer import models

    student, teacher = models()
    torch.manual_seed(1)  # random non-zero lora_B: the adapter changes outputs from the first step
    return get_peft_model(student, lora_config_for(student, r=4, init_lora_weights=False)), teacher


@pytest.mark.parametrize("mode", ["dmt", "bptt"])
def test_trainer_trains_a_lora_student_and_checkpoints_the_adapter(tmp_path, mode):
    """SMTTrainer refused a PeftModel (TypeError), and its get_base_model() trained but was saved with the adapter's
    keys (...base_layer.weight, ...lora_A...), which from_pretrained loaded as a student with random updater weights.
    Now a PeftModel student trains in dmt (only the adapter), its checkpoints hold the adapter, which reloads onto the
    base student bit-exact, and resuming from one equals the uninterrupted run."""
    from test_trainer import data, models, targs

    from smt_hf.trainer import SMTTrainer

    peft_model, teacher = _peft_trainer_models()
    teacher = teacher if mode == "dmt" else None
    frozen = {k: v.clone() for k, v in peft_model.get_base_model().state_dict().items() if "lora_" not in k}
    lora = {k: v.clone() for k, v in peft_model.state_dict().items() if "lora_" in k}
    args = targs(tmp_path / "a", mode=mode, dmt_start="initial", max_steps=4, save_strategy="steps", save_steps=2)
    SMTTrainer(model=peft_model, teacher=teacher, args=args, train_dataset=data()).train()
    assert not all(torch.equal(peft_model.state_dict()[k], v) for k, v in lora.items())  # the adapter trained
    after = peft_model.get_base_model().state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # only the adapter trained
    checkpoint = tmp_path / "a" / "out" / "checkpoint-2"
    files = set(os.listdir(checkpoint / "student"))
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files and "model.safetensors" not in files
    reloaded = PeftModel.from_pretrained(models()[0], tmp_path / "a" / "out" / "checkpoint-4" / "student").eval()
    x = torch.randint(0, 16, (3, 7))
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=x).logits, peft_model.eval()(input_ids=x).logits)

    resumed, teacher = _peft_trainer_models()
    teacher = teacher if mode == "dmt" else None
    SMTTrainer(model=resumed, teacher=teacher, args=targs(tmp_path / "b", mode=mode, dmt_start="initial", max_steps=4),
               train_dataset=data()).train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state_dict().keys() == peft_model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), peft_model.state_dict().values()))

    plain, teacher = models()
    teacher = teacher if mode == "dmt" else None
    with pytest.raises(ValueError, match="holds a PEFT adapter for the student.*pass the PeftModel"):
        SMTTrainer(model=plain, teacher=teacher, args=targs(tmp_path / "c", mode=mode, dmt_start="initial"),
                   train_dataset=data()).train(resume_from_checkpoint=str(checkpoint))
    # the adapter folder is not a model folder: from_pretrained and smt-export say what it is
    from smt_hf.export import main

    with pytest.raises(OSError, match="holds a PEFT adapter that names no base model.*merge_and_unload"):
        SMTRecurrentForCausalLM.from_pretrained(checkpoint / "student")
    with pytest.raises(SystemExit):
        main(["--model", str(checkpoint), "--out", str(tmp_path / "export")])


def test_trainer_refuses_peft_setups_it_would_save_wrong(tmp_path):
    from peft import LoraConfig
    from test_trainer import data, targs

    from smt_hf.export import export_for_hub
    from smt_hf.trainer import SMTTrainer

    peft_model, teacher = _peft_trainer_models()
    dmt = targs(tmp_path, mode="dmt", dmt_start="initial")
    with pytest.raises(ValueError, match="pass the PeftModel itself"):
        SMTTrainer(model=peft_model.get_base_model(), teacher=teacher, args=dmt, train_dataset=data())
    with pytest.raises(ValueError, match="PEFT student is trained in mode 'dmt' or 'bptt', not 'joint'"):
        SMTTrainer(model=peft_model, teacher=teacher, args=targs(tmp_path, mode="joint"), train_dataset=data())
    lora_teacher = get_peft_model(teacher, LoraConfig(r=4, target_modules=list(LORA_TARGET_MODULES["transformer"])))
    with pytest.raises(ValueError, match=r"teacher has PEFT adapter layers: pass `teacher.merge_and_unload\(\)`"):
        SMTTrainer(model=peft_model, teacher=lora_teacher, args=dmt, train_dataset=data())
    with pytest.raises(ValueError, match="PEFT adapter layers in it.*merge_and_unload"):
        export_for_hub(peft_model.get_base_model(), tmp_path / "export")
    teacher = lora_teacher.merge_and_unload()
    with pytest.raises(ValueError, match="push_to_hub=True with a PEFT student"):  # raised after training before
        SMTTrainer(model=peft_model, teacher=teacher, args=targs(tmp_path, mode="dmt", dmt_start="initial",
                                                                 push_to_hub=True, hub_model_id="u/n"),
                   train_dataset=data())
    trainer = SMTTrainer(model=peft_model, teacher=teacher, args=dmt, train_dataset=data())
    with pytest.raises(ValueError, match="student is a PeftModel: push the adapter"):
        trainer.push_to_hub("user/name")
    # another adapter name, or two adapters: the checkpoint's student/ would not hold the trained one
    from test_trainer import models

    base = models()[0]
    named = get_peft_model(base, lora_config_for(base, r=4), adapter_name="mine")
    with pytest.raises(ValueError, match=r"one adapter named 'default'.*this one has \['mine'\]"):
        SMTTrainer(model=named, teacher=teacher, args=dmt, train_dataset=data())
    two, _ = _peft_trainer_models()
    two.add_adapter("other", lora_config_for(models()[0], r=4))
    with pytest.raises(ValueError, match=r"this one has \['default', 'other'\]"):
        SMTTrainer(model=two, teacher=teacher, args=dmt, train_dataset=data())


def test_an_adapter_folder_that_names_its_base_loads_through_from_pretrained(tmp_path):
    """transformers loads an adapter folder whose adapter_config names the base model (the base, then the adapter);
    only a folder naming none (an SMTTrainer checkpoint's student/) is refused."""
    _student("gru").save_pretrained(tmp_path / "base")
    base = SMTRecurrentForCausalLM.from_pretrained(tmp_path / "base")
    torch.manual_seed(1)
    peft_model = get_peft_model(base, lora_config_for(base, r=4, init_lora_weights=False)).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = SMTRecurrentForCausalLM.from_pretrained(tmp_path / "adapter").eval()
    x = torch.randint(0, 16, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, peft_model(input_ids=x).logits)
