"""`SMTTrainingArguments`: the SMT / joint-SMT / DMT / BPTT settings on top of `TrainingArguments`.

Defaults are the reference settings (spec.md): AdamW lr 3e-4, betas (0.9, 0.95), weight decay 0.01,
1% linear warm-up then constant, gradient clipping 1.0 per model, lambda (dec, dyn, unif) = (1, 0.1, 0.001),
DMT memory weight 10 and readout weight 1, Td 256. DMT defaults are the no-BPTT settings that solved
needle retrieval here (README Results): one-step gradient, k = 1, teacher transitions included.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .evaluation import STUDENT_METRICS, TEACHER_METRICS

MODES = ("smt", "joint", "dmt", "bptt")
# raised here for `fsdp=...` and by SMTTrainer for FSDP from accelerate's config
ONESTEP_READOUT_FSDP = ("`lambda_onestep_readout` holds the read-out's weights constant with torch.func.functional_call, "
                        "which FSDP-sharded weights do not support; set it to 0 under FSDP (DDP and single-device runs "
                        "support it).")


@dataclass
class SMTTrainingArguments(TrainingArguments):
    mode: str = field(
        default="joint",
        metadata={
            "help": "Training mode: 'joint' (SMT, dynamics gradient also trains the encoder; the reference default), "
            "'smt' (detached SMT: the RNN regresses onto stop-gradient teacher memories), 'dmt' (DAgger Memory "
            "Training: teacher frozen, the RNN rolls out on its own memories) or 'bptt' (baseline: the same RNN "
            "unrolled with backpropagation through time)."
        },
    )
    context_length: int = field(default=256, metadata={"help": "Tc: tokens of context the teacher encoder reads."})
    future_length: int = field(default=64, metadata={"help": "Tf: future tokens the teacher decoder predicts (>= 1)."})
    rollout_length: int = field(default=256, metadata={"help": "Td: steps of each DMT rollout."})
    dmt_stride: int = field(
        default=1,
        metadata={"help": "k: DMT matches the rolled-out memory to the teacher's every k steps (k | Td). 1 (default) "
                  "supervises every transition (the no-BPTT setting that works; the reference used 16 with its "
                  "gradient through the rollout); the teacher then encodes Td+1 contexts per sequence."}
    )
    dmt_gradient: str = field(
        default="one_step",
        metadata={
            "help": "DMT gradient path: 'one_step' (default; no BPTT: the rollout is a forward pass and each matched "
            "transition f(m_hat_t, x_t) -> m*_{t+1} gets gradient through that one step only, as the paper's DMT) or "
            "'full_rollout' (the memory-matching gradient flows through the whole Td-step rollout: truncated BPTT "
            "with dense teacher targets; a baseline, not SMT's no-BPTT method)."
        },
    )
    dmt_matched_steps: int | None = field(
        default=None,
        metadata={
            "help": "One-step DMT: match this many transitions per sequence, drawn uniformly at random (without "
            "replacement, fresh for every sequence and step) from the Td of the rollout, instead of every "
            "`dmt_stride`-th. Every position is supervised in expectation, at the teacher cost of n+1 contexts per "
            "sequence instead of Td+1. Needs dmt_gradient='one_step' and dmt_stride=1; None (default) = off."
        },
    )
    dmt_teacher_transitions: bool | None = field(
        default=None,
        metadata={
            "help": "DMT also regresses f on the teacher's own states, f(m*_t, x_t) -> m*_{t+1} (DAgger's initial "
            "expert data; one batched call, part 'dmt_teacher', weight lambda_dmt_dyn). Needs dmt_stride=1. "
            "None (default) = on when dmt_stride == 1 and dmt_matched_steps is None."
        },
    )
    dmt_buffer_size: int = field(
        default=0,
        metadata={
            "help": "DAgger data aggregation: keep this many transitions (m_hat_t, x_t, m*_{t+1}) visited by earlier "
            "rollouts and regress on as many of them as the current rollout has each step (part 'dmt_replay'). "
            "0 = off (pure on-policy)."
        },
    )
    smt_memory_noise: float = field(
        default=0.0,
        metadata={
            "help": "smt/joint: std of Gaussian noise added to the input memory of the supervised transition "
            "(f(m_t + noise, x) -> m_{t+1}; DART-style, teaches f to pull perturbed states back). Memories are "
            "RMS-normalised, so entries have unit scale. 0 = off."
        },
    )
    dmt_start: str = field(
        default="teacher",
        metadata={
            "help": "Where DMT rollouts start: 'teacher' (from the teacher memory of the first Tc tokens of a stream "
            "window, as the reference) or 'initial' (from the student's initial memory at the start of an episode, "
            "so the standalone student is trained as it is used)."
        },
    )
    lambda_dec: float = field(default=1.0, metadata={"help": "Weight of the decoder (predictive state) loss."})
    lambda_dec_start_step: int = field(
        default=0,
        metadata={
            "help": "smt/joint: the decoder loss is off (weight 0) for the first `lambda_dec_start_step` optimizer "
            "steps (0-based step indices below it; Trainer's logged step = index + 1), then ramps to "
            "`lambda_dec` over `lambda_dec_ramp_steps` (a curriculum: with lambda_first_step, the read-out of each "
            "prefix's memory is learned first, the whole future after; recipes/results/teacher_curves.md, "
            "associative recall). 0 = from the first step (the reference)."
        },
    )
    lambda_dec_ramp_steps: int = field(
        default=0,
        metadata={"help": "Steps of the linear ramp of the decoder weight from 0 to `lambda_dec` that starts at "
                          "`lambda_dec_start_step` (0 = a step change)."},
    )
    seq_len_curriculum: list[int] | None = field(
        default=None,
        metadata={
            "help": "A curriculum over sequence length (sequence-length warm-up, Li et al. 2022, arXiv 2108.06084), "
            "by supervision: stage i keeps the labels of positions t < seq_len_curriculum[i] and sets the others to "
            "-100 during training (every loss that reads labels ignores them; inputs are unchanged, so compute is not "
            "saved; SMT split points are drawn over the whole sequence, so the dynamics / uniformity losses still see "
            "every position, unless `seq_len_curriculum_split='horizon'`, see there). Stages last "
            "`seq_len_curriculum_steps` optimizer steps counted from this trainer's first step; the last one lasts "
            "to the end and must be the sequence length (a batch longer than it is refused). Episodes only (smt/joint with split='random', dmt with dmt_start='initial', bptt). "
            "Strictly increasing int lengths >= 2, e.g. [8, 16, 24, 32] (parity: recipes/results/teacher_curves.md). "
            "None = off."
        },
    )
    seq_len_curriculum_steps: int = field(
        default=0, metadata={"help": "Optimizer steps per stage of `seq_len_curriculum` (>= 1 when it is set)."}
    )
    seq_len_curriculum_split: str = field(
        default="sequence",
        metadata={
            "help": "smt/joint with `seq_len_curriculum`: where the SMT split points c are drawn during training. "
            "'sequence' (default): uniform over 0..L-1 as without a curriculum, so a split at c >= the stage length H "
            "has no supervised decoder target (at H=8 of L=32, 3 splits in 4). 'horizon': uniform over 0..H-1, so "
            "every split's first future target labels[c] lies in the supervised positions; on the default path (one "
            "transition per split) the dynamics and uniformity losses then see only memories of contexts shorter than "
            "H until the last stage (with smt_all_prefixes the dynamics loss still sees every transition). Evaluation "
            "is unchanged."
        },
    )
    lambda_dyn: float = field(default=0.1, metadata={"help": "Weight of the SMT dynamics (memory regression) loss."})
    lambda_unif: float = field(default=0.001, metadata={"help": "Weight of the uniformity loss on memory tokens."})
    lambda_encoder_lm: float = field(
        default=0.0,
        metadata={
            "help": "smt/joint with a causal-context teacher (SMTTeacherConfig(encoder_causal=True)): weight of an "
            "auxiliary next-token loss on the encoder's token stream after `encoder_lm_layer` blocks, through the "
            "teacher's LM head (deep supervision). Context tokens attend only to tokens, so this trains the very "
            "states the registers read; it lets the registers copy an answer the tokens have already computed "
            "(associative recall: recipes/results/teacher_curves.md). 0 = off (the reference)."
        },
    )
    encoder_lm_layer: int | None = field(
        default=None,
        metadata={"help": "Encoder blocks the auxiliary LM loss reads, 1..num_encoder_layers. None = "
                  "num_encoder_layers - 1 (at least 1): the last block is left for the registers to read the answer."},
    )
    lambda_first_step: float = field(
        default=0.0,
        metadata={
            "help": "smt_all_prefixes only: weight of a dense first-step decoder loss, the teacher's readout of the "
            "memory of EVERY prefix x[:t] against labels[t] (the decoder loss sees one split per sequence). 0 = off."
        },
    )
    lambda_onestep_readout: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a one-step read-out loss on the student's transition, gradient through ONE step (no "
            "BPTT): CE of the read-out, its weights held constant, of f(m_t, x_t) against labels[t+1]. smt/joint "
            "(needs smt_all_prefixes): m_t = the teacher's memory, the teacher's read-out; dmt (needs dmt_gradient="
            "'one_step'): m_t = the rollout's memory at the matched steps, the student's read-out. Memory regression "
            "weighs every memory direction alike; this weighs the ones the answer is read from (associative recall: "
            "recipes/results/fig3/onestep_error_probe_*.md). 0 = off (the paper's losses)."
        },
    )
    lambda_readout: float = field(default=1.0, metadata={"help": "Weight of the DMT readout cross-entropy."})
    lambda_dmt_dyn: float = field(default=10.0, metadata={"help": "Weight of the DMT memory-matching loss."})
    gamma: float = field(default=1.0, metadata={"help": "Discount gamma^j on the decoder loss of future step j."})
    uniformity_samples: int = field(default=512, metadata={"help": "Memory tokens sampled for the uniformity loss."})
    splits_per_sequence: int = field(default=1, metadata={"help": "SMT split points drawn per sequence."})
    split: str = field(
        default="random",
        metadata={
            "help": "SMT split points: 'random' (uniform over 0..L-1, covering the empty context; for episodes) or "
            "'last' (c = Tc: a stream window of Tc context tokens then the future)."
        },
    )
    smt_all_prefixes: bool = field(
        default=False,
        metadata={
            "help": "smt/joint with a causal-context teacher (SMTTeacherConfig(encoder_causal=True)): encode every "
            "prefix of each sequence in one pass (teacher.encode_prefixes) and supervise all L transitions of the "
            "sequence instead of one split point; the decoder loss still uses one random split per sequence. "
            "Needs sequences of at most context_length tokens (episodes). A measured variant, not the default."
        },
    )
    clip_per_model: bool = field(
        default=True, metadata={"help": "Clip the gradient norm to max_grad_norm separately for teacher and student."}
    )
    recurrent_step_compile: str | None = field(
        default=None,
        metadata={
            "help": "Run the student's recurrent step (DMT rollouts, BPTT, SMT transitions) through "
            "smt_hf.fast.compile_step, passed to the training module (the student object is left unpatched): "
            "'none' = eager but free of host-device syncs, or a torch.compile mode such as 'default' "
            "(recommended on GPU for DMT/BPTT). None (default) = the plain eager step."
        },
    )
    eval_positions: int = field(
        default=16, metadata={"help": "Target positions per sequence probed by the teacher / one-step evaluation."}
    )
    # reference optimiser defaults
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate (reference: 3e-4 SMT)."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (reference: 0.95)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (reference: 0.01)."})
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata={"help": "Reference: warm-up then constant."})
    warmup_steps: float = field(default=0.01, metadata={"help": "Warm-up steps, or a fraction (< 1) of all steps."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the collator reads all columns."})

    def __post_init__(self):
        if self.greater_is_better is None and str(self.metric_for_best_model).endswith(("_bits", "drift_mean", "drift_last")):
            self.greater_is_better = False  # lower is better; HF's default is False only for names ending in "loss"
        if self.mode not in MODES:
            raise ValueError(f"`mode` must be one of {list(MODES)}, got {self.mode!r}.")
        for name in ("context_length", "future_length", "rollout_length", "dmt_stride", "splits_per_sequence"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise TypeError(f"`{name}` must be an int, got {value!r} ({type(value).__name__}).")
            setattr(self, name, int(value))  # (a numpy int: a plain int, as the saved arguments' JSON needs)
            if value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}; e.g. set `{name}=1`.")
        if self.rollout_length % self.dmt_stride != 0:
            raise ValueError(
                f"`dmt_stride` ({self.dmt_stride}) must divide `rollout_length` ({self.rollout_length}); e.g. set "
                f"`rollout_length={self.rollout_length - self.rollout_length % self.dmt_stride or self.dmt_stride}`."
            )
        renamed = {"detach": "one_step", "through": "full_rollout"}
        if self.dmt_gradient in renamed:
            raise ValueError(
                f"`dmt_gradient={self.dmt_gradient!r}` was renamed: use `dmt_gradient={renamed[self.dmt_gradient]!r}` "
                "('one_step' = no gradient across steps, the no-BPTT DMT; 'full_rollout' = gradient through the "
                "Td-step rollout, i.e. truncated BPTT)."
            )
        if self.dmt_gradient not in ("one_step", "full_rollout"):
            raise ValueError(f"`dmt_gradient` must be 'one_step' or 'full_rollout', got {self.dmt_gradient!r}.")
        if self.dmt_matched_steps is not None:
            if not 1 <= self.dmt_matched_steps <= self.rollout_length:
                raise ValueError(f"`dmt_matched_steps` must be in 1..rollout_length ({self.rollout_length}), got "
                                 f"{self.dmt_matched_steps}.")
            if self.dmt_gradient != "one_step" or self.dmt_stride != 1:
                raise ValueError("`dmt_matched_steps` (random matched transitions) needs dmt_gradient='one_step' and "
                                 f"dmt_stride=1, got {self.dmt_gradient!r} and {self.dmt_stride}; unset one or the other.")
            if self.dmt_teacher_transitions:
                raise ValueError("`dmt_teacher_transitions` needs the teacher memory at every step; with "
                                 "`dmt_matched_steps` set it to False (or leave it None).")
        if self.dmt_teacher_transitions is None:
            self.dmt_teacher_transitions = self.dmt_stride == 1 and self.dmt_matched_steps is None
        if self.dmt_teacher_transitions and self.dmt_stride != 1 and self.mode == "dmt":
            raise ValueError(
                f"`dmt_teacher_transitions=True` needs `dmt_stride=1` (one-step teacher transitions), got "
                f"dmt_stride={self.dmt_stride}; set dmt_stride=1 or dmt_teacher_transitions=False."
            )
        if self.dmt_buffer_size < 0 or self.smt_memory_noise < 0:
            raise ValueError("`dmt_buffer_size` and `smt_memory_noise` must be >= 0.")
        if self.dmt_start not in ("teacher", "initial"):
            raise ValueError(f"`dmt_start` must be 'teacher' or 'initial', got {self.dmt_start!r}.")
        if self.split not in ("random", "last"):
            raise ValueError(f"`split` must be 'random' or 'last', got {self.split!r}.")
        if self.smt_all_prefixes and (self.mode not in ("smt", "joint") or self.split != "random"):
            raise ValueError("`smt_all_prefixes` applies to mode 'smt' or 'joint' with split='random' (episodes).")
        if self.uniformity_samples < 2:
            raise ValueError("`uniformity_samples` must be >= 2.")
        if self.lambda_encoder_lm > 0 and self.mode not in ("smt", "joint"):
            raise ValueError(f"`lambda_encoder_lm` trains the teacher encoder, so it applies to mode 'smt' or 'joint', "
                             f"got mode={self.mode!r}; set lambda_encoder_lm=0.")
        if self.lambda_first_step > 0 and not self.smt_all_prefixes:
            raise ValueError("`lambda_first_step` reads the memory of every prefix, so it needs smt_all_prefixes=True "
                             "(a causal-context teacher); set lambda_first_step=0 or smt_all_prefixes=True.")
        if self.lambda_onestep_readout > 0:
            if self.mode == "bptt" or (self.mode in ("smt", "joint") and not self.smt_all_prefixes) or (
                    self.mode == "dmt" and self.dmt_gradient != "one_step"):
                raise ValueError("`lambda_onestep_readout` trains one transition through the read-out: it applies to "
                                 "mode 'smt'/'joint' with smt_all_prefixes=True (labels of every prefix) or mode 'dmt' "
                                 f"with dmt_gradient='one_step'; got mode={self.mode!r}, smt_all_prefixes="
                                 f"{self.smt_all_prefixes}, dmt_gradient={self.dmt_gradient!r}. Set it to 0 otherwise.")
            if self.fsdp:
                raise ValueError(ONESTEP_READOUT_FSDP)
        if self.lambda_dec_start_step < 0 or self.lambda_dec_ramp_steps < 0:
            raise ValueError(f"`lambda_dec_start_step` and `lambda_dec_ramp_steps` must be >= 0, got "
                             f"{self.lambda_dec_start_step} and {self.lambda_dec_ramp_steps}.")
        if self.lambda_dec_start_step or self.lambda_dec_ramp_steps:
            if self.mode not in ("smt", "joint"):
                raise ValueError(f"`lambda_dec_start_step` / `lambda_dec_ramp_steps` schedule the teacher's decoder "
                                 f"loss, which only mode 'smt' or 'joint' has, got mode={self.mode!r}; leave them at 0.")
            if self.lambda_dec == 0:
                raise ValueError("`lambda_dec_start_step` / `lambda_dec_ramp_steps` schedule a decoder loss of weight "
                                 "lambda_dec=0, which is off at every step; set lambda_dec > 0 or leave them at 0.")
            if 0 < self.max_steps <= self.lambda_dec_start_step:
                raise ValueError(f"`lambda_dec_start_step`={self.lambda_dec_start_step} is not below max_steps="
                                 f"{self.max_steps}: the decoder loss would never be on; lower it or raise max_steps.")
        if self.seq_len_curriculum is not None:
            lens = list(self.seq_len_curriculum) if isinstance(self.seq_len_curriculum, (list, tuple)) else None
            if (not lens or any(not isinstance(n, int) or isinstance(n, bool) for n in lens) or lens[0] < 2
                    or any(b <= a for a, b in zip(lens, lens[1:]))):
                raise ValueError(f"`seq_len_curriculum` must be strictly increasing lengths >= 2 (e.g. [8, 16, 32]), "
                                 f"got {self.seq_len_curriculum}.")
            if self.seq_len_curriculum_steps < 1:
                raise ValueError(f"`seq_len_curriculum` needs `seq_len_curriculum_steps` >= 1 (optimizer steps per "
                                 f"stage), got {self.seq_len_curriculum_steps}.")
            if 0 < self.max_steps <= (len(lens) - 1) * self.seq_len_curriculum_steps:
                raise ValueError(f"`seq_len_curriculum` {lens} with {self.seq_len_curriculum_steps} steps per stage "
                                 f"reaches its last length at step {(len(lens) - 1) * self.seq_len_curriculum_steps}, "
                                 f"not below max_steps={self.max_steps}; shorten the stages or raise max_steps.")
            if (self.mode in ("smt", "joint") and self.split == "last") or (self.mode == "dmt" and self.dmt_start == "teacher"):
                raise ValueError("`seq_len_curriculum` counts positions from the start of each sequence, so it applies "
                                 "to episodes: smt/joint with split='random', dmt with dmt_start='initial', or bptt; "
                                 f"got mode={self.mode!r} with split={self.split!r}, dmt_start={self.dmt_start!r} "
                                 "(stream windows, whose targets start after the context).")
            self.seq_len_curriculum = lens
        elif self.seq_len_curriculum_steps:
            raise ValueError("`seq_len_curriculum_steps` is set but `seq_len_curriculum` is not; set both or neither.")
        if self.seq_len_curriculum_split not in ("sequence", "horizon"):
            raise ValueError(f"`seq_len_curriculum_split` must be 'sequence' or 'horizon', got "
                             f"{self.seq_len_curriculum_split!r}.")
        if self.seq_len_curriculum_split == "horizon" and (self.seq_len_curriculum is None
                                                           or self.mode not in ("smt", "joint")):
            raise ValueError("`seq_len_curriculum_split='horizon'` draws SMT split points inside the current "
                             "`seq_len_curriculum` length, so it needs mode 'smt' or 'joint' with a seq_len_curriculum; "
                             f"got mode={self.mode!r}, seq_len_curriculum={self.seq_len_curriculum}.")
        if self.encoder_lm_layer is not None and self.encoder_lm_layer < 1:
            raise ValueError(f"`encoder_lm_layer` must be >= 1 (or None), got {self.encoder_lm_layer}.")
        for name in ("lambda_dec", "lambda_dyn", "lambda_unif", "lambda_readout", "lambda_dmt_dyn", "lambda_encoder_lm",
                     "lambda_first_step", "lambda_onestep_readout"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"`gamma` must be in (0, 1], got {self.gamma}.")
        check_trainer_flags(self)
        self.remove_unused_columns = False
        super().__post_init__()
        check_fp16_device(self)  # after transformers' device set-up (it must see accelerator_config first)

    def min_sequence_length(self) -> int:
        """Shortest dataset sequence this mode can use (checked by the trainer against the data)."""
        if self.mode in ("smt", "joint"):
            return self.context_length + 1 if self.split == "last" else 2
        if self.mode == "dmt":
            start = self.context_length if self.dmt_start == "teacher" else 0
            return start + self.rollout_length
        return 2


def check_trainer_flags(args) -> None:
    """Raise ValueError for the `TrainingArguments` flags SMTTrainer cannot honour (README, Training modes): run when
    the arguments are built and again when SMTTrainer is (an accelerator_config or a later edit can set them)."""
    check_gradient_accumulation(args.gradient_accumulation_steps, args.mode, args.dmt_buffer_size)
    if args.load_best_model_at_end:
        raise ValueError("load_best_model_at_end is not supported by SMTTrainer; pick a checkpoint folder instead "
                         "(save_strategy='best' with metric_for_best_model='student_loss' keeps the best one: "
                         "trainer.state.best_model_checkpoint).")
    for name in ("bf16_full_eval", "fp16_full_eval"):
        if getattr(args, name):
            raise ValueError(f"{name}=True is not supported by SMTTrainer: evaluate() runs the student and teacher in "
                             "their parameters' dtype (float32 unless you cast them). Cast them yourself for a "
                             "half-precision evaluation (e.g. trainer.student.to(torch.bfloat16)), or leave it False.")
    for name, off in (("label_smoothing_factor", 0.0), ("neftune_noise_alpha", None)):
        if getattr(args, name) != off:
            raise ValueError(
                f"`{name}` is not supported by SMTTrainer: its losses are its own (smt_hf/losses.py, weighted by "
                f"the lambda_* arguments), not the model's token cross-entropy; leave {name}={off}.")


FSDP_PUSH = ("push_to_hub under FSDP is not supported by SMTTrainer (the export runs on one process, outside the "
             "sharded models): leave push_to_hub=False, save with trainer.save_model(folder) and push that folder: "
             "`smt-export --model <folder> --out <dir> --push --repo-id user/name` (smt_hf.hub.export_for_hub).")


def check_best_metric(metric: str | None, has_teacher: bool, eval_dataset) -> None:
    """ValueError unless `metric_for_best_model` (save_strategy='best', reduce_lr_on_plateau, early stopping) names a
    metric evaluate() reports (`smt_hf.evaluation`), with or without 'eval_' and, for a dict of eval datasets, its
    '<name>_' prefix: HF finds out only at the first evaluation (a KeyError mid-training)."""
    if metric is None:
        return
    names = STUDENT_METRICS + (TEACHER_METRICS if has_teacher else ())
    datasets = [f"{k}_" for k in eval_dataset] if isinstance(eval_dataset, dict) else [""]
    if metric.removeprefix("eval_") in {d + n for d in datasets for n in names}:
        return
    raise ValueError(f"metric_for_best_model={metric!r} is not a metric SMTTrainer's evaluate() reports"
                     f"{'' if has_teacher else ' without a teacher'}: use one of {[d + n for d in datasets for n in names]} "
                     "(eval_ prefix optional; student_acc needs episodes with task targets) and set greater_is_better "
                     "to match (lr_scheduler_type='reduce_lr_on_plateau' sets 'loss': pass e.g. 'student_loss').")


def check_fp16_device(args) -> None:
    """ValueError for fp16=True on CPU: accelerate has no fp16 autocast there, so it trained in float32. Run after
    `TrainingArguments.__post_init__` (reading `args.device` sets the device up)."""
    if args.fp16 and args.device.type == "cpu":
        raise ValueError("fp16=True on CPU trains in float32 (accelerate applies fp16 mixed precision on GPUs only): "
                         "use bf16=True for mixed precision on CPU, or neither.")


def check_gradient_accumulation(steps, mode: str, dmt_buffer_size: int = 0) -> None:
    """Raise ValueError unless `steps` micro-batches per optimizer step can stand for one larger batch here.

    Every loss part is a mean over its own micro-batch (HF divides each by `steps`), so accumulation equals the
    larger batch only when every micro-batch holds as many targets: in dmt/bptt on fixed-length episodes with the
    same labels per row. Refused: smt/joint (the decoder loss's target count depends on the split points drawn in
    the step, and the uniformity loss is over the whole batch) and dmt with `dmt_buffer_size` > 0 (a later
    micro-batch replays transitions an earlier one of the same step added)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`gradient_accumulation_steps` must be an int >= 1, got {steps!r}.")
    if steps > 1 and mode in ("smt", "joint"):
        raise ValueError(
            f"gradient_accumulation_steps={steps} is not supported in mode {mode!r}: the decoder loss is a mean over "
            "each micro-batch's targets, whose number depends on the split points drawn in the step (a micro-batch "
            "with no target counts as much as one with many), and the uniformity loss is over the whole batch, so "
            "accumulated micro-batches would not equal one larger batch. Raise per_device_train_batch_size instead.")
    if steps > 1 and mode == "dmt" and dmt_buffer_size > 0:
        raise ValueError(f"gradient_accumulation_steps={steps} with dmt_buffer_size={dmt_buffer_size} is not supported: "
                         "a later micro-batch would replay the transitions an earlier one of the same step added. Raise "
                         "per_device_train_batch_size instead, or set dmt_buffer_size=0.")


__all__ = ["SMTTrainingArguments", "MODES", "check_gradient_accumulation", "check_trainer_flags", "check_fp16_device",
           "check_best_metric"]
