"""`SMTTrainer`: SMT, joint SMT, DMT and BPTT in the HF `Trainer`.

    trainer = SMTTrainer(model=student, teacher=teacher, args=SMTTrainingArguments(mode="joint", ...),
                         train_dataset=ds, eval_dataset=ds_eval)
    trainer.train()          # in smt/joint the student is standalone throughout (readout from D, m_0 = E(empty))
    trainer.save_model()     # output_dir/student and output_dir/teacher, both `from_pretrained`-loadable

`compute_loss` only gathers the loss parts from `SMTTrainingModule.forward` and weights them; the loss
arithmetic lives in `losses.py`. Each part is logged as its own curve (`decoder_loss`, `dynamics_loss`, ...).

smt/joint train neither the student's readout nor its m_0: they are the teacher's decoder + head and E(empty context),
copied in by `student.init_from_teacher(teacher)`. `ReadoutFromTeacher` makes that call, from one place, when the
trainer is built and after every optimizer step (the teacher trains in both modes), and `SMTTrainer.sync_readout()`
at the start of `evaluate()`, `save_model()` and `push_to_hub()` (a teacher edited outside training), so wherever a
user observes the student - a callback, an `evaluate()`, a checkpoint on disk, the model after `train()`,
`push_to_hub` - it is the standalone model of the current teacher.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time

import safetensors.torch
import torch
from accelerate.utils import gather_object
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import HubStrategy, SaveStrategy, speed_metrics
from transformers.utils.hub import PushInProgress
from transformers.utils import logging

from . import losses
from .callbacks import SeqLenCurriculumCheck
from .data.collator import SMTDataCollator
from .evaluation import evaluate_smt, summarize
from . import hub
from .modeling_recurrent import SMTRecurrentForCausalLM, empty_context_memory
from .modeling_utils import is_dtensor
from .peft_utils import check_peft_student, has_adapter_layers, is_peft_model, load_adapter_checkpoint
from .modeling_teacher import SMTTeacherModel
from .training_args import (FSDP_PUSH, ONESTEP_READOUT_FSDP, SMTTrainingArguments, check_best_metric, check_fp16_device,
                            check_trainer_flags)
from .training_module import SMTTrainingModule, mask_labels_from

logger = logging.get_logger(__name__)

STUDENT_DIR, TEACHER_DIR = "student", "teacher"


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss part is NaN/inf: training stops instead of writing a NaN model."""


def _to_cpu(obj):
    """A copy of nested dicts / lists / tuples with every tensor moved to the CPU."""
    if torch.is_tensor(obj):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _first_length(dataset) -> int | None:
    try:
        return len(dataset[0]["input_ids"])
    except Exception:  # iterable datasets, custom containers
        return None


def _fsdp_version(trainer: Trainer) -> int | None:
    """1 or 2 when the trainer runs under accelerate's FSDP plugin, else None."""
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    return None if plugin is None else getattr(plugin, "fsdp_version", 1)


def _refuse_fsdp1(version: int | None) -> None:
    if version == 1:
        raise ValueError(
            "SMTTrainer runs under FSDP2 only (`fully_shard`: the student's readout and m_0 are copied from the teacher "
            "shard by shard, and evaluate() runs the models outside the root's forward); FSDP1 (fsdp_config "
            "version 1, deprecated by transformers) is not supported. Pass fsdp_config={'version': 2} (the default), "
            "or train without FSDP."
        )


@contextlib.contextmanager
def root_unsharded(module: torch.nn.Module):
    """FSDP2: within the block the root's own parameters (those outside its `fully_shard`-ed Blocks) are gathered
    full (`unshard()`), so submodules can run outside the root's forward (the Blocks gather theirs in their own
    forward hooks); `reshard()` after. Writes to parameters inside the block are lost on `reshard()`: write after.
    Every process must enter it (collectives). Nothing for a module that is not an FSDP2 root (one process, DDP, or
    before the Trainer has wrapped it)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        FSDPModule = ()
    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


@contextlib.contextmanager
def optimizer_state_load_not_strict():
    """Within the block `torch.distributed.checkpoint.state_dict.set_optimizer_state_dict` (which accelerate's
    `load_fsdp_optimizer` calls for FSDP2) loads with `StateDictOptions(strict=False)`: a parameter that requires grad
    but never had a gradient (smt/joint: the student's readout and m_0, copies of the teacher's; an unused carried
    prefill encoder) has no optimizer state in the checkpoint, which the strict load refuses ("Missing optimizer state
    for parameter ..."). Not strict, it keeps none, as `optimizer.load_state_dict` does in one process."""
    import dataclasses

    import torch.distributed.checkpoint.state_dict as dsd

    strict_load = dsd.set_optimizer_state_dict

    def load(model, optimizers, optim_state_dict, *, options=None):
        options = dataclasses.replace(options or dsd.StateDictOptions(), strict=False)
        return strict_load(model, optimizers, optim_state_dict, options=options)

    dsd.set_optimizer_state_dict = load
    try:
        yield
    finally:
        dsd.set_optimizer_state_dict = strict_load


class ReadoutFromTeacher(TrainerCallback):
    """smt/joint: `student.init_from_teacher(teacher)` (readout := the teacher's decoder + head, m_0 := E(empty))
    when the trainer is built (`on_init_end`: a first `evaluate()` or `push_to_hub` sees it) and after every optimizer
    step (`on_optimizer_step`: before HF logs, evaluates or saves a checkpoint), the one place `SMTTrainer` calls it.
    Cost: one copy of the decoder and one encoder pass over the K registers per step (about 2 ms on one CPU thread
    for the tiny test models, 17 ms at d=256, K=16, 8 + 4 layers: ~1% of a step).

    Why a copy and not the teacher's modules themselves (tied, shared Parameters, no refresh): m_0 = E(empty) is
    computed by the teacher's encoder, not a parameter that can be shared; a later DMT phase trains the student's
    readout alone, which would then train (and change) the teacher's decoder it is meant to leave untouched; and one
    training module holding the same Blocks under `student.` and `teacher.` puts each in its state_dict twice and
    gives FSDP's auto-wrap one module with two parents."""

    def __init__(self, student: SMTRecurrentForCausalLM, teacher: SMTTeacherModel, module: torch.nn.Module | None = None):
        self.student, self.teacher, self.module = student, teacher, module  # module: the training module (FSDP root)

    def sync(self) -> None:
        if not any(is_dtensor(p) for p in self.teacher.parameters()):  # one process, DDP, not yet wrapped
            self.student.init_from_teacher(self.teacher)
            return
        # FSDP2 (parameters are DTensor shards): E(empty) with the root's parameters gathered (one encoder pass over
        # the K registers, all-gathers as in a forward), then the copies into the resharded shards
        with root_unsharded(self.module):
            memory = empty_context_memory(self.teacher)
        self.student.init_from_teacher(self.teacher, initial_memory=memory)

    def on_init_end(self, args, state, control, **kwargs):
        self.sync()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.sync()


class SMTTrainer(Trainer):
    loss_is_scaled_for_ga = False  # compute_loss returns per-batch means

    def __init__(
        self,
        model: SMTRecurrentForCausalLM,
        teacher: SMTTeacherModel | None = None,
        args: SMTTrainingArguments | None = None,
        train_dataset=None,
        eval_dataset=None,
        data_collator=None,
        **kwargs,
    ):
        if args is None:
            args = SMTTrainingArguments(output_dir="smt_output")
        if not isinstance(args, SMTTrainingArguments):
            raise TypeError("SMTTrainer needs `args=SMTTrainingArguments(...)`.")
        peft_student = None
        if is_peft_model(model):  # LoRA etc. on the student: trained and saved as an adapter (dmt/bptt)
            check_peft_student(model, args)
            peft_student, model = model, model.get_base_model()
        elif isinstance(model, torch.nn.Module) and has_adapter_layers(model):
            raise ValueError("`model` has PEFT adapter layers but is not the PeftModel: pass the PeftModel itself "
                             "(get_peft_model's result, not its get_base_model()), so the checkpoints hold the "
                             "adapter (saved as it is, this model's keys do not load back into a student).")
        if not isinstance(model, SMTRecurrentForCausalLM):
            raise TypeError(f"`model` must be an SMTRecurrentForCausalLM (the student), or a PeftModel wrapping one, "
                            f"got {type(model).__name__}.")
        if teacher is not None and has_adapter_layers(teacher):
            raise ValueError("The teacher has PEFT adapter layers: pass `teacher.merge_and_unload()` (a plain "
                             "SMTTeacherModel; SMTTrainer saves the teacher as a from_pretrained folder, and a "
                             "frozen DMT teacher loses nothing by merging). Adapters are trained on the student, "
                             "in dmt or bptt.")
        for name in ("compute_metrics", "preprocess_logits_for_metrics"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"`{name}` is not used by SMTTrainer: evaluate() reports the package's metrics of the standalone "
                    "student, teacher and rollout drift (eval_student_loss, eval_student_acc, eval_teacher_acc, "
                    "eval_onestep_acc, eval_drift_mean, ...; smt_hf/evaluation.py), not a Trainer prediction loop. "
                    "Compute your own from the student's model(input_ids).logits or generate(), or from "
                    "smt_hf.evaluation.evaluate_smt.")
        if teacher is None and args.mode != "bptt":
            raise ValueError(f"mode={args.mode!r} needs a teacher: pass `teacher=SMTTeacherModel(...)` (only 'bptt' runs without).")
        if teacher is not None:
            tc, sc = teacher.config, model.config
            for name in ("vocab_size", "hidden_size", "memory_tokens"):
                if getattr(tc, name) != getattr(sc, name):
                    raise ValueError(
                        f"Teacher and student disagree on {name} ({getattr(tc, name)} vs {getattr(sc, name)}); build the "
                        "student config with `SMTRecurrentConfig.from_teacher(teacher.config, backbone=...)`."
                    )
            if args.context_length > tc.max_context_length:
                raise ValueError(
                    f"context_length={args.context_length} exceeds the teacher's max_context_length={tc.max_context_length}: "
                    f"pass SMTTrainingArguments(context_length={tc.max_context_length}) or less (the default is 256), or "
                    f"build the teacher with SMTTeacherConfig(max_context_length={args.context_length})."
                )
        for name, ds in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            length = _first_length(ds) if ds is not None else None
            if length is not None and name == "train_dataset" and length < args.min_sequence_length():
                raise ValueError(
                    f"{name} sequences have {length} tokens but mode={args.mode!r} needs >= {args.min_sequence_length()} "
                    "(see context_length / rollout_length / split); use longer sequences or smaller lengths."
                )
        _refuse_fsdp1(int((args.fsdp_config or {}).get("version", 2)) if args.fsdp else None)
        if args.push_to_hub and args.fsdp:  # (before Trainer creates the Hub repo)
            raise ValueError(FSDP_PUSH)
        check_best_metric(args.metric_for_best_model, teacher is not None, eval_dataset)
        if data_collator is None:
            # sequence batches for every mode; smt/joint split points are drawn inside the training step
            data_collator = SMTDataCollator(mode="eval")
        step_fn = None
        if args.recurrent_step_compile is not None:  # passed to the training module; the student is not patched
            from .fast import compile_step

            mode = None if args.recurrent_step_compile == "none" else args.recurrent_step_compile
            step_fn = compile_step(model, mode=mode, install=False)
        self.student, self.teacher = model, teacher
        self.peft_student = peft_student  # the PeftModel wrapping self.student, or None
        self.module = SMTTrainingModule(model, teacher, args, step_fn=step_fn)
        self.readout_from_teacher = None
        if args.mode in ("smt", "joint"):  # the student's readout and m_0 are the teacher's (ReadoutFromTeacher)
            self.readout_from_teacher = ReadoutFromTeacher(model, teacher, self.module)
            kwargs["callbacks"] = [self.readout_from_teacher, *(kwargs.get("callbacks") or [])]
        if args.seq_len_curriculum:  # an epoch-based run knows its step count only when training begins
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), SeqLenCurriculumCheck()]
        super().__init__(model=self.module, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=data_collator, **kwargs)
        _refuse_fsdp1(_fsdp_version(self))  # (also an FSDP1 plugin from `accelerate launch`'s config)
        if args.lambda_onestep_readout > 0 and _fsdp_version(self) is not None:  # FSDP from accelerate's config
            raise ValueError(ONESTEP_READOUT_FSDP)
        if self.args.push_to_hub and _fsdp_version(self) is not None:
            raise ValueError(FSDP_PUSH)
        check_trainer_flags(self.args)  # again: an accelerator_config or a later edit of args can set them
        check_fp16_device(self.args)
        if peft_student is not None and (_fsdp_version(self) is not None or self.is_deepspeed_enabled):
            raise ValueError("A PEFT student under FSDP or DeepSpeed (here from accelerate's config) is not supported "
                             "by SMTTrainer: train the adapter on one process (or DDP), or the full student.")
        self.model_accepts_loss_kwargs = False
        self._parts_sum: dict[str, torch.Tensor] = {}
        self._parts_count = 0
        self.last_eval: dict = {}

    def sync_readout(self) -> None:
        """smt/joint: the student's readout and m_0 := the teacher's now (`ReadoutFromTeacher.sync`), so a teacher
        changed outside training (`teacher.load_state_dict(...)` after the trainer was built) is what `evaluate()`,
        `save_model()` and `push_to_hub()` (which call this first) see. Nothing in dmt/bptt. Under FSDP2 every process
        must call it (collectives), as every process calls those three."""
        if self.readout_from_teacher is not None:
            self.readout_from_teacher.sync()

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        horizon = self.module.label_horizon(self.state.global_step) if model.training else None
        if horizon is not None:  # seq_len_curriculum: supervise t < horizon
            labels = inputs.get("labels")
            if labels is None:
                raise ValueError("`seq_len_curriculum` masks `labels` by position, but this batch has none (pre-cut "
                                 "SMT windows?); pass whole sequences with `labels`, or unset the curriculum.")
            if labels.shape[1] > self.args.seq_len_curriculum[-1]:
                raise ValueError(f"`seq_len_curriculum` ends at {self.args.seq_len_curriculum[-1]} but the batch's "
                                 f"sequences have {labels.shape[1]} positions, which would never be supervised; end "
                                 "the curriculum at the sequence length.")
            inputs = {**inputs, "labels": mask_labels_from(labels, horizon)}
            if self.args.seq_len_curriculum_split == "horizon":  # SMT split points inside the stage length too
                inputs["split_horizon"] = horizon
        parts = model(**inputs)
        total = losses.combine(parts, self.module.weights(self.state.global_step))
        if not torch.isfinite(total):
            bad = {k: float(v.detach()) for k, v in parts.items() if not torch.isfinite(v)}
            compiled = self.args.torch_compile or hasattr(model, "_orig_mod")
            raise NonFiniteLossError(
                f"Non-finite loss at step {self.state.global_step} (mode {self.args.mode}): "
                f"{bad or {'total': float(total)}}. Lower the learning rate or the lambda of that part."
                + (" This step ran under torch.compile: on CUDA (torch 2.11, bf16 autocast) Inductor gave non-finite "
                   "gradients for a joint-SMT step that eager and backend='aot_eager' computed finite "
                   "(recipes/results/gpu_logs/compile_nan_probe.md); rerun without torch_compile to tell the two "
                   "apart." if compiled else "")
            )
        for k, v in parts.items():
            self._parts_sum[k] = self._parts_sum.get(k, 0.0) + v.detach().float()
        self._parts_count += 1
        return (total, parts) if return_outputs else total

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._parts_count:
            for k, v in self._parts_sum.items():
                logs[f"{k}_loss"] = round(float(v) / self._parts_count, 6)
            self._parts_sum, self._parts_count = {}, 0
            if self.args.lambda_dec_start_step or self.args.lambda_dec_ramp_steps:  # the weight of the last step
                logs["decoder_weight"] = self.module.decoder_weight(max(self.state.global_step - 1, 0))
            if self.args.seq_len_curriculum:  # the label horizon of the last step
                logs["seq_len_horizon"] = self.module.label_horizon(max(self.state.global_step - 1, 0))
        super().log(logs, start_time)

    def _clip_grad_norm(self, model):
        if (not self.args.clip_per_model or self.teacher is None or self.args.mode == "dmt"
                or getattr(self, "is_fsdp_enabled", False)):  # FSDP: sharded grads need accelerate's global norm
            return super()._clip_grad_norm(model)
        self.accelerator.unscale_gradients()  # fp16 AMP: clip the true gradients (no-op otherwise, as in super)
        norms = []
        for sub in (self.student, self.teacher):
            params = [p for p in sub.parameters() if p.grad is not None]
            if params:
                norms.append(torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm))
        return torch.stack([n.float() for n in norms]).norm() if norms else torch.zeros(())

    # ------------------------------------------------------------------ eval
    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """Refused: `Trainer.predict` would return per-batch loss parts as "predictions". Raises ValueError naming
        `evaluate()` (accuracy / bits of the standalone student) and `model.generate()` / `model(...)` (outputs)."""
        raise ValueError("SMTTrainer.predict is not supported (its batches give loss parts, not predictions): use "
                         "trainer.evaluate(dataset) for the standalone student's metrics, or the student's "
                         "model(input_ids).logits / model.generate(...) for its outputs.")

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Teacher first-step loss/accuracy, the student's one-step accuracy from teacher memories, the
        standalone student's teacher-forced loss and accuracy, and rollout drift 1-R^2 (`smt_hf.evaluation`).

        Batches come from the HF eval loader (`get_eval_dataloader`: the trainer's collator, `eval_batch_size`, and
        under several processes a shard per process); the per-batch sums of `evaluate_smt` are gathered from every
        process before `summarize`, so each process returns the metrics of the whole eval set. A dict of eval
        datasets gives metrics per dataset, prefixed `<metric_key_prefix>_<name>_` (as HF).
        """
        override = eval_dataset is not None
        dataset = eval_dataset if override else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate() needs an eval_dataset.")
        if isinstance(dataset, dict):  # {name: dataset}: metrics per dataset, prefixed "<prefix>_<name>_" (as HF)
            metrics = {}
            for name, ds in dataset.items():
                metrics.update(self.evaluate(ds if override else name, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        self._memory_tracker.start()
        start = time.time()
        self.sync_readout()  # (a teacher edited since the last optimizer step)
        with root_unsharded(self.model):  # FSDP2: the models run outside the root's forward
            results = self._evaluate_batches(dataset)
        if self.accelerator.num_processes > 1:  # every process's per-batch sums (on the CPU: pickled between ranks)
            results = gather_object([_to_cpu(r) for r in results])
        summary = summarize(results)
        self.last_eval = summary
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in summary.items() if not isinstance(v, list)}
        n = sum(r["rows"] for r in results)  # as HF: runtime, samples and steps per second; memory when tracked
        metrics.update(speed_metrics(metric_key_prefix, start, num_samples=n,
                                     num_steps=math.ceil(n / (self.args.eval_batch_size * self.args.world_size))))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)  # (returned, not logged: as HF)
        return metrics

    def _evaluate_batches(self, dataset) -> list[dict]:
        """`evaluate_smt` sums of this process's eval batches (the repeats that pad its last batch left out), each
        with its number of `rows`. Under
        FSDP2 every forward is a collective (each Block gathers its shards), so a batch of repeats only is still run
        (and its result dropped) to keep the processes in step."""
        sharded = any(is_dtensor(p) for p in self.model.parameters())
        results = []
        for batch in self.get_eval_dataloader(dataset):  # a str names one of the eval_dataset dict's entries
            batch = {k: v.to(self.args.device) for k, v in batch.items()}
            n = self._rows_to_evaluate(batch["input_ids"].shape[0])
            if n == 0 and not sharded:
                continue
            batch = {k: v[: n or None] for k, v in batch.items()}
            result = evaluate_smt(self.student, self.teacher, batch["input_ids"], batch["labels"],
                                  self.args.context_length, eval_positions=self.args.eval_positions,
                                  drift_stride=self.args.dmt_stride, attention_mask=batch.get("attention_mask"))
            if n:
                results.append({**result, "rows": n})
        return results

    def _rows_to_evaluate(self, batch_size: int) -> int:
        """How many leading rows of this process's eval batch are samples of the dataset. Accelerate gives every
        process equally many equal batches (`even_batches`) by repeating samples in the last one;
        `gather_for_metrics` drops them by cutting the concatenation over processes (in process order) to the
        samples left, and this applies that rule to this process's rows, so each sample is evaluated once."""
        acc = self.accelerator
        if acc.num_processes == 1 or not acc.even_batches:  # nothing repeated (and batch counts may differ)
            return batch_size
        kept = len(acc.gather_for_metrics([0] * batch_size))  # rows over all processes, repeats dropped
        before = sum(gather_object([batch_size])[: acc.process_index])  # rows of the processes before this one
        return max(0, min(batch_size, kept - before))

    # ------------------------------------------------------------------ checkpoints
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """As the HF Trainer's (every process calls it; `_save` writes), after `sync_readout()`: here, before FSDP2
        gathers the state dict that `_save` receives, the student's readout and m_0 are the current teacher's."""
        self.sync_readout()
        super().save_model(output_dir, _internal_call=_internal_call)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """student/ and teacher/ as `from_pretrained` folders (safetensors) + the arguments as JSON."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        for prefix, sub, folder in (("student.", self.student, STUDENT_DIR), ("teacher.", self.teacher, TEACHER_DIR)):
            if sub is None:
                continue
            if sub is self.student and self.peft_student is not None:  # the adapter (adapter_model.safetensors)
                self.peft_student.save_pretrained(os.path.join(output_dir, folder))
                continue
            sd = None
            if state_dict is not None and not (sub is self.teacher and self.args.mode == "dmt"):
                # (a frozen DMT teacher is not part of the module's state_dict: it is saved as it is)
                sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
            sub.save_pretrained(os.path.join(output_dir, folder), state_dict=sd)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(os.path.join(output_dir, STUDENT_DIR))
        with open(os.path.join(output_dir, "smt_training_args.json"), "w") as f:
            f.write(self.args.to_json_string())

    def _replay_path(self, folder: str) -> str:
        return os.path.join(folder, f"dmt_replay_{self.args.process_index}.safetensors")

    def _save_checkpoint(self, model, trial) -> None:
        """As the HF Trainer's, plus the DMT replay buffer of this process (`dmt_buffer_size` > 0): it is training
        state, like the optimizer, so a resumed run equals an uninterrupted one."""
        super()._save_checkpoint(model, trial)
        if self.module.replay is not None and not self.args.save_only_model:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            if os.path.isdir(folder):  # (a rotated-away checkpoint is gone)
                safetensors.torch.save_file(self.module.replay.state_dict(), self._replay_path(folder))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Both models' weights (and the DMT replay buffer) from a checkpoint folder. Raises ValueError for a missing
        folder, a checkpoint of another mode (its optimizer state would not fit: start a new phase from its
        `student/` / `teacher/` with `from_pretrained` instead), or one whose `teacher/` this trainer lacks or has;
        warns for a `save_only_model=True` checkpoint (no optimizer, scheduler or RNG state: not an exact resume).
        (Under FSDP, transformers reads the folder's trainer_state.json first: a missing folder fails there.)"""
        if not os.path.isdir(resume_from_checkpoint):
            raise ValueError(f"resume_from_checkpoint={resume_from_checkpoint!r}: no such folder.")
        args_file = os.path.join(resume_from_checkpoint, "smt_training_args.json")
        mode = None
        if os.path.isfile(args_file):  # written into every checkpoint by _save (older ones: not checked)
            with open(args_file) as f:
                mode = json.load(f).get("mode")
        if mode is not None and mode != self.args.mode:
            raise ValueError(f"{resume_from_checkpoint} is a checkpoint of mode {mode!r}, this trainer's is "
                             f"{self.args.mode!r}: resuming needs the same mode. To start a {self.args.mode} phase "
                             "from it, load its student/ (and teacher/) with from_pretrained and train without "
                             "resume_from_checkpoint.")
        if self.teacher is None and os.path.isdir(os.path.join(resume_from_checkpoint, TEACHER_DIR)):
            raise ValueError(f"{resume_from_checkpoint} holds a teacher/ (its run had one): build this trainer with "
                             "that teacher to resume it (SMTTeacherModel.from_pretrained(<checkpoint>/teacher)).")
        # what transformers' _load_optimizer_and_scheduler reads: optimizer.pt, FSDP's optimizer.bin or optimizer_0/
        has_optimizer = any(name.startswith("optimizer") for name in os.listdir(resume_from_checkpoint))
        if not has_optimizer and self.is_world_process_zero():
            logger.warning(f"{resume_from_checkpoint} has no optimizer state (saved with save_only_model=True?): "
                           "training goes on from its weights with a fresh optimizer, scheduler and RNG, which is "
                           "not the run it was saved from.")
        for sub, folder in ((self.student, STUDENT_DIR), (self.teacher, TEACHER_DIR)):
            if sub is None:
                continue
            adapter = os.path.join(resume_from_checkpoint, folder, "adapter_model.safetensors")
            if sub is self.student and self.peft_student is not None:
                load_adapter_checkpoint(self.peft_student, adapter)
                continue
            path = os.path.join(resume_from_checkpoint, folder, "model.safetensors")
            if not os.path.isfile(path) and sub is self.student and os.path.isfile(adapter):
                raise ValueError(f"{resume_from_checkpoint} holds a PEFT adapter for the student, not its weights: "
                                 "pass the PeftModel it was trained with (same base student and adapter config) as "
                                 "`model` to resume it.")
            if not os.path.isfile(path):
                no_teacher = folder == TEACHER_DIR and os.path.isdir(os.path.join(resume_from_checkpoint, STUDENT_DIR))
                raise ValueError(f"Can't find {path}: not an SMTTrainer checkpoint folder" + (
                    " with a teacher (its run had none: build this trainer without one to resume it)."
                    if no_teacher else "."))
            state = safetensors.torch.load_file(path, device="cpu")
            if any(is_dtensor(p) for p in sub.parameters()):
                # FSDP2: the Trainer loads after wrapping, the parameters are DTensor shards; every process reads the
                # full tensors and keeps its shard of each (`load_state_dict` can't copy a plain tensor into a DTensor)
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

                set_model_state_dict(sub, state, options=StateDictOptions(full_state_dict=True, strict=True))
            else:
                sub.load_state_dict(state, strict=True)
        replay = self._replay_path(resume_from_checkpoint)
        if self.module.replay is not None and os.path.isfile(replay):
            self.module.replay.load_state_dict(safetensors.torch.load_file(replay, device="cpu"), self.args.device)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        if checkpoint is None or _fsdp_version(self) != 2:
            return super()._load_optimizer_and_scheduler(checkpoint)
        with optimizer_state_load_not_strict():  # FSDP2: parameters that never had a gradient have no state
            return super()._load_optimizer_and_scheduler(checkpoint)

    # ------------------------------------------------------------------ Hub (smt_hf.hub)
    def run_info(self, **extra) -> dict:
        """A run summary for model cards: `smt_hf.hub.trainer_run_info(self, **extra)`."""
        return hub.trainer_run_info(self, **extra)

    def push_to_hub(self, repo_id: str | None = None, commit_message: str | None = "End of training",
                    blocking: bool = True, token: str | None = None, revision: str | None = None,
                    private: bool | None = None, push_teacher: bool = False, run_info: dict | None = None, **kwargs):
        """Push the standalone student as a self-contained Hub repo, and optionally the teacher to
        `<repo_id>-teacher`: `smt_hf.hub.push_trainer` (see there; `token` / `private` / `revision` default to
        `hub_token` / `hub_private_repo` / `hub_revision`, as the HF Trainer's). Unlike HF's, the first argument is
        the repo id (HF's is the commit message). The model card comes from the run (`run_info()`, updated with
        `run_info`), not from Trainer's `create_model_card` keywords: any other keyword raises TypeError. An earlier
        upload (`blocking=False`, or `push_to_hub=True`'s at a save) is waited for before the export folder is
        written again. Process zero pushes; the others check the same and return None. ValueError under FSDP2."""
        if kwargs:
            raise TypeError(
                f"SMTTrainer.push_to_hub() got unsupported keyword(s) {sorted(kwargs)}: it takes repo_id, commit_message, "
                "blocking, token, revision, private, push_teacher and run_info; the model card is built from the run "
                "(smt_hf.hub.make_model_card: pass card fields in run_info), not from Trainer.create_model_card.")
        if any(is_dtensor(p) for p in self.model.parameters()):
            raise ValueError(FSDP_PUSH)
        hub.push_target(self, repo_id)  # (its ValueErrors on every process, not on process zero only)
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        self._finish_current_push()
        if not self.is_world_process_zero():
            return None
        commit = hub.push_trainer(self, repo_id, commit_message=commit_message, private=private, token=token,
                                  push_teacher=push_teacher, run_info=run_info, revision=revision, blocking=blocking)
        if not blocking:
            self.push_in_progress = PushInProgress([commit])
        return commit

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """`push_to_hub=True`, at each save (HF's hook; `hub_strategy` every_save, checkpoint, all_checkpoints): the
        checkpoint's student, exported as `push_to_hub()` exports it (HF copies a top-level model.safetensors, which
        an SMT checkpoint keeps in student/), to the repo `Trainer` made at the start, plus the checkpoint folder for
        the 'checkpoint' strategies (as HF); never the teacher. The export runs here, on the training thread; the
        uploads run in the background (in order), and a save while they run skips its push unless `hub_always_push`,
        which waits for them instead (the export folder is rewritten)."""
        a = self.args
        if not self.is_world_process_zero() or a.hub_strategy == HubStrategy.END:
            return
        if not a.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        self._finish_current_push()
        self.callback_handler.on_push_begin(a, self.state, self.control)
        message = (f"Training in progress, step {self.state.global_step}" if a.save_strategy == SaveStrategy.STEPS
                   else f"Training in progress, epoch {int(self.state.epoch or 0)}")
        folder = hub.export_for_hub(hub.load_model(checkpoint_folder, "student"), hub.export_dir(self),
                                    tokenizer=self.processing_class, run_info=self.run_info())
        push = dict(token=a.hub_token, revision=a.hub_revision, blocking=False)
        jobs = [hub.commit_folder(folder.path, self.hub_model_id, commit_message=message, **push)]
        if a.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            path = "last-checkpoint" if a.hub_strategy == HubStrategy.CHECKPOINT else os.path.basename(checkpoint_folder)
            jobs.append(hub.commit_folder(checkpoint_folder, self.hub_model_id, path_in_repo=path,
                                          commit_message=message + ", checkpoint", **push))
        self.push_in_progress = PushInProgress(jobs)

    def save_summary(self, path: str, **extra) -> None:
        """Write the last evaluation and the run's log history as JSON: `smt_hf.hub.save_summary(self, path, **extra)`."""
        hub.save_summary(self, path, **extra)


__all__ = ["SMTTrainer", "NonFiniteLossError", "ReadoutFromTeacher"]
