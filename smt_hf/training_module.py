"""`SMTTrainingModule`: student + teacher in one nn.Module whose `forward(**batch)` returns the loss parts of
the training mode. Everything the optimiser touches runs inside this forward, so DDP gradient sync and
FSDP all-gathers see it. The loss arithmetic itself is in `losses.py` (pure functions).

Modes (spec.md):
    joint  m_c = E(ctx), m_{c+1} = E(next ctx); L_dec(D(m_c, fut)), L_unif(m_c), L_dyn(f(m_c, x_c), m_{c+1})
    smt    as joint, but L_dyn sees sg(m_c), sg(m_{c+1}): the RNN learns from L_dyn alone
           (with `smt_all_prefixes` and a causal-context teacher: m_0..m_L of every prefix in one encoder pass,
           L_dyn over all L transitions of each sequence; + `lambda_first_step`: the readout of every m_t
           against labels[t]; + `lambda_onestep_readout`: the teacher's read-out, weights constant, of every
           one-step prediction f(m_t, x_t) against labels[t+1])
           (+ `lambda_encoder_lm`, causal-context teacher only: next-token CE on the encoder's token stream after
           `encoder_lm_layer` blocks, deep supervision of the states the registers read)
    dmt    teacher frozen; the RNN rolls out Td steps on its own memories, matched every k steps to the
           teacher's memories (all computed in one batched encoder call); readout CE on sg(memory)
    bptt   the student unrolled from m_0 with full backpropagation, next-token CE

Data flows one way: the dataloader gives padded sequence batches (`SMTDataCollator`); in smt/joint the module's own
`SplitSampler` draws the split points inside `forward` and the pure `smt_windows` builds the windows there. The
student's transition is `student.step`, or the `step_fn` this module was given (`smt_hf.fast.compile_step(...,
install=False)`): the student object itself is never patched.
"""

from __future__ import annotations

import torch
from torch import nn

from . import losses
from .data.sampling import SplitSampler
from .data.windows import IGNORE_INDEX, prefix_contexts, right_windows, smt_windows

PAD_ID = 0  # id written at padded positions of the SMT windows (the teacher masks them; the decoder's labels are -100)


class ReplayBuffer:
    """DAgger data aggregation for DMT: a ring buffer of supervised transitions (m_hat, x, m*) visited by earlier
    rollouts, with m_hat (N, K, d) the student's own memory, x (N,) the token it reads and m* (N, K, d) the
    teacher memory after it. Kept on the training device; `SMTTrainer` checkpoints write it (one file per process) so a
    resumed run continues as an uninterrupted one."""

    def __init__(self, capacity: int):
        self.capacity, self.size, self.pos = int(capacity), 0, 0
        self.data: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.size

    def add(self, prev: torch.Tensor, tokens: torch.Tensor, target: torch.Tensor) -> None:
        new = [prev.detach(), tokens.detach(), target.detach()]
        if self.data is None:
            self.data = [torch.empty((self.capacity, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in new]
        n = min(new[0].shape[0], self.capacity)
        idx = (self.pos + torch.arange(n, device=new[0].device)) % self.capacity
        for buf, t in zip(self.data, new):
            buf[idx] = t[-n:].to(buf.dtype)
        self.pos, self.size = (self.pos + n) % self.capacity, min(self.size + n, self.capacity)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored transitions and the ring position, for a checkpoint (empty while nothing is stored)."""
        if self.data is None:
            return {}
        names = ("prev", "tokens", "target")
        return {**{n: b.contiguous() for n, b in zip(names, self.data)}, "pos_size": torch.tensor([self.pos, self.size])}

    def load_state_dict(self, state: dict[str, torch.Tensor], device=None) -> None:
        """Restore what `state_dict` returned (tensors moved to `device`)."""
        if not state:
            self.data, self.pos, self.size = None, 0, 0
            return
        if state["prev"].shape[0] != self.capacity:
            raise ValueError(f"The saved replay buffer holds {state['prev'].shape[0]} transitions but dmt_buffer_size="
                             f"{self.capacity}; resume with the dmt_buffer_size the checkpoint was trained with.")
        self.data = [state[n].to(device) for n in ("prev", "tokens", "target")]
        self.pos, self.size = (int(v) for v in state["pos_size"])

    def sample(self, n: int) -> list[torch.Tensor] | None:
        """n transitions drawn uniformly (with replacement) from the buffer; None while it is empty."""
        if self.size == 0 or n < 1:
            return None
        idx = torch.randint(0, self.size, (n,), device=self.data[0].device)
        return [buf[idx] for buf in self.data]


class SMTTrainingModule(nn.Module):
    """Student + teacher; `forward(**batch)` returns the loss parts of `args.mode` (see the module docstring).

    In 'dmt' mode the teacher is frozen *without touching the caller's teacher*: it is held outside the module's
    parameters (so the optimiser, DDP and FSDP never see it), encoded under `torch.no_grad()` in eval mode, and
    moved with the module by `.to()`. Its `requires_grad` flags and train/eval mode are left as they were, so a
    later 'joint' phase on the same teacher trains it.

    Args:
        student: the `SMTRecurrentForCausalLM` being trained.
        teacher: the `SMTTeacherModel` (None in 'bptt').
        args: `SMTTrainingArguments` (mode, lengths, lambdas, split, DMT settings).
        step_fn: optional transition `(memory (B, K, d), token_embedding (B, d)) -> (B, K, d)` run instead of the
            student's own `_step` in DMT rollouts, SMT transitions and BPTT (e.g. `compile_step(student, mode,
            install=False)`; `SMTTrainer` passes it for `recurrent_step_compile`). With it the per-call token-id
            range check (a host-device sync in every rollout step) is skipped: DMT encodes the same tokens with
            the teacher, which checks them, and BPTT checks them once per forward.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None, args, step_fn=None):
        super().__init__()
        self.student = student
        self.args = args
        self.mode = args.mode
        if self.mode == "dmt":
            object.__setattr__(self, "_frozen_teacher", teacher)  # not a submodule: no parameters, no state_dict
        else:
            self.teacher = teacher
        object.__setattr__(self, "step_fn", step_fn)  # a function (never registered as a submodule)
        if args.lambda_encoder_lm > 0:  # smt/joint only (the arguments refuse other modes): a trained teacher
            causal, depth = bool(teacher.config.encoder_causal), teacher.config.num_encoder_layers
            if not causal:
                raise ValueError("lambda_encoder_lm needs a causal-context teacher (SMTTeacherConfig(encoder_causal=True)): "
                                 "a bidirectional encoder's tokens see the future, so they cannot be trained as an LM.")
            if args.encoder_lm_layer is not None and args.encoder_lm_layer > depth:
                raise ValueError(f"encoder_lm_layer={args.encoder_lm_layer} exceeds the teacher's {depth} encoder layers.")
        if self.mode in ("smt", "joint"):  # draws the split points of each sequence batch inside forward
            self.sampler = SplitSampler(splits_per_sequence=args.splits_per_sequence, split=args.split,
                                        context_length=args.context_length)
        self.replay: ReplayBuffer | None = ReplayBuffer(args.dmt_buffer_size) if args.dmt_buffer_size else None
        # FSDP auto-wrap reads this: only the block classes present (accelerate raises on a listed class it can't find)
        self._no_split_modules = [name for name in ("Block", "ResidualMLPBlock")
                                  if any(type(m).__name__ == name for m in self.modules())]

    def __getattr__(self, name):
        if name == "teacher" and "_frozen_teacher" in self.__dict__:
            return self.__dict__["_frozen_teacher"]
        return super().__getattr__(name)

    def _apply(self, fn, *args, **kwargs):
        frozen = self.__dict__.get("_frozen_teacher")
        if frozen is not None:
            frozen._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def forward(self, split_horizon: int | None = None, **batch) -> dict[str, torch.Tensor]:
        """The loss parts of one batch (`smt_hf.losses.combine` weighs them). `split_horizon` (smt/joint,
        `seq_len_curriculum_split='horizon'`, passed by `SMTTrainer.compute_loss`): draw split points c < it.

        Raises:
            ValueError: `split_horizon` with pre-cut SMT windows (their split points are drawn) or in dmt/bptt."""
        if split_horizon is not None and (self.mode not in ("smt", "joint") or "context_ids" in batch):
            raise ValueError("split_horizon (seq_len_curriculum_split='horizon') draws SMT split points, so it needs "
                             f"mode 'smt' or 'joint' with sequence batches (input_ids, labels); got mode={self.mode!r}"
                             + (" with pre-cut SMT windows (context_ids)" if "context_ids" in batch else "") + ".")
        if self.mode in ("smt", "joint"):
            seq = batch
            if self.args.smt_all_prefixes:
                parts = self.smt_prefix_parts(batch["input_ids"], batch["labels"], batch.get("attention_mask"),
                                              split_horizon)
            else:
                if "context_ids" not in batch:  # a sequence batch: draw the split points now
                    batch = self.smt_batch(batch["input_ids"], batch["labels"], batch.get("attention_mask"),
                                           split_horizon)
                parts = self.smt_parts(**batch)
            if self.args.lambda_encoder_lm > 0:
                if "input_ids" not in seq:
                    raise ValueError("lambda_encoder_lm needs sequence batches (input_ids, labels), not pre-cut SMT "
                                     "windows; pass the dataset's sequences to the trainer.")
                parts["encoder_lm"] = self.encoder_lm_part(seq["input_ids"], seq["labels"], seq.get("attention_mask"))
            return parts
        if self.mode == "dmt":
            return self.dmt_parts(**batch)
        return self.bptt_parts(**batch)

    def student_step(self, memory: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """f(m, x): memory (B, K, d), input_ids (B,) -> (B, K, d). The student's `step`, or `step_fn` on the
        student's token embeddings when one was given (memory shape checked, no token-id check)."""
        if self.step_fn is None:
            return self.student.step(memory, input_ids)
        core = self.student.model
        return self.step_fn(core.as_state(memory), core.embed_tokens(input_ids))

    # ------------------------------------------------------------------ SMT
    def smt_batch(self, input_ids, labels, attention_mask=None, split_horizon=None) -> dict[str, torch.Tensor]:
        """The smt/joint windows of a right-padded sequence batch (B, L), on its device: split points drawn by
        `self.sampler` (torch's global CPU RNG at this moment, so a resumed run draws the split points of an
        uninterrupted one) in 0..min(length, split_horizon)-1, windows by `smt_windows` (see
        `smt_hf.data.windows` for the output keys)."""
        B, L = input_ids.shape
        lengths = attention_mask.sum(1) if attention_mask is not None else torch.full((B,), L, device=input_ids.device)
        drawn = lengths if split_horizon is None else lengths.clamp(max=split_horizon)
        c = self.sampler(drawn)  # (B, S), in range by construction: no check (no sync)
        a = self.args
        return smt_windows(input_ids, labels, lengths, c, a.context_length, a.future_length, PAD_ID, check=False)

    def smt_parts(
        self, context_ids, context_mask, next_context_ids, next_context_mask, next_token, future_ids, future_labels, **_
    ) -> dict[str, torch.Tensor]:
        N = context_ids.shape[0]
        # 1. both memories in one encoder call: (2N, Tc) -> (2N, K, d)
        both = self.teacher.encode(torch.cat([context_ids, next_context_ids]), torch.cat([context_mask, next_context_mask]))
        m_c, m_next = both[:N], both[N:]  # (N, K, d) each
        # 2. predictive state from m_c, and 3. one supervised RNN transition m_c -(x_c)-> m_{c+1}
        return self._smt_loss_parts(m_c, future_ids, future_labels, m_c, next_token, m_next)[0]

    def _smt_loss_parts(self, m_c, future_ids, future_labels, prev, tokens, nxt) -> tuple[dict, torch.Tensor]:
        """L_dec (decode the future (N, Tf) from m_c (N, K, d)) and L_unif(m_c); L_dyn over the supervised
        transitions prev -(tokens)-> nxt, (M, K, d), (M,), (M, K, d): detached in 'smt' mode. Returns the parts
        and the one-step predictions f(prev, tokens) (M, K, d)."""
        a = self.args
        parts = {
            "decoder": losses.decoder_loss(self.teacher.decode(m_c, future_ids), future_labels, a.gamma),
            "uniformity": losses.uniformity_loss(m_c, a.uniformity_samples),
        }
        if self.mode == "smt":
            prev, nxt = prev.detach(), nxt.detach()
        if a.smt_memory_noise > 0:  # DART-style: perturbed input memories, clean targets (teaches f to correct drift)
            prev = prev + a.smt_memory_noise * torch.randn_like(prev)
        pred = self.student_step(prev, tokens)  # (M, K, d)
        parts["dynamics"] = losses.dynamics_loss(pred, nxt)
        return parts, pred

    def smt_prefix_parts(self, input_ids, labels, attention_mask=None, split_horizon=None) -> dict[str, torch.Tensor]:
        """Every transition of each sequence from one causal-context encoder pass (`smt_all_prefixes`); the decoder's
        split point c < min(L, split_horizon)."""
        a = self.args
        B, L = input_ids.shape
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("smt_all_prefixes needs equal-length sequences (no padding); use fixed-length episodes.")
        if L > a.context_length:
            raise ValueError(f"smt_all_prefixes encodes whole sequences as contexts: length {L} exceeds context_length="
                             f"{a.context_length}; use episodes of <= context_length tokens or the default split path.")
        # 1. m_0 .. m_L, the memories of all prefixes, in one pass: (B, L+1, K, d)
        mems = self.teacher.encode_prefixes(input_ids)
        # 2. predictive state at one random split per sequence (as the default path): decode x[c : c+Tf]
        c = self.sampler(torch.full((B,), min(L, split_horizon or L))).to(input_ids.device)[:, 0]  # (B,)
        lengths = torch.full((B,), L, device=input_ids.device)
        future_ids = right_windows(input_ids, c, a.future_length, PAD_ID, lengths)  # (B, Tf)
        future_labels = right_windows(labels, c, a.future_length, IGNORE_INDEX, lengths)  # (B, Tf)
        m_c = mems[torch.arange(B, device=input_ids.device), c]  # (B, K, d)
        # 3. all L supervised RNN transitions m_t -(x_t)-> m_{t+1}: (B*L, K, d)
        prev, nxt = mems[:, :-1].flatten(0, 1), mems[:, 1:].flatten(0, 1)
        parts, pred = self._smt_loss_parts(m_c, future_ids, future_labels, prev, input_ids.flatten(), nxt)
        if a.lambda_onestep_readout > 0:  # the one-step predictions m^_{t+1} = f(m_t, x_t), t < L-1, predict labels[t+1]
            pred = pred.view(B, L, *prev.shape[1:])[:, :-1].flatten(0, 1)
            logits = self.teacher.readout(pred, constant_weights=True).view(B, L - 1, -1)  # (B, L-1, V)
            parts["onestep_readout"] = losses.readout_loss(logits, labels[:, 1:])
        if a.lambda_first_step > 0:  # 4. dense first step: the readout of m_t (memory of x[:t]) predicts labels[t]
            first = self.teacher.readout(mems[:, :-1].flatten(0, 1)).view(B, L, -1)  # (B, L, V)
            parts["first_step"] = losses.readout_loss(first, labels)
        return parts

    def encoder_lm_part(self, input_ids, labels, attention_mask=None) -> torch.Tensor:
        """Auxiliary LM loss of a causal-context teacher encoder (`lambda_encoder_lm`, deep supervision): the token
        states after `encoder_lm_layer` blocks of the first Tc = context_length tokens, (B, Tc, d), through the
        teacher's LM head; the state at i (has read x[:i+1]) predicts labels[i+1] (the target SMT's decoder learns
        for that position; -100 and padding ignored). Mean CE over the targets (0 when none)."""
        t, Tc = self.teacher, self.args.context_length
        n = self.args.encoder_lm_layer or max(1, t.config.num_encoder_layers - 1)
        ids, target = input_ids[:, :Tc], labels[:, 1 : Tc + 1]  # (B, Tc), (B, Tc-1 or Tc)
        mask = None if attention_mask is None else attention_mask[:, :Tc]
        logits = t.lm_head(t.token_states(ids, mask, n))[:, : target.shape[1]]  # (B, <=Tc, V)
        if mask is not None:
            target = target.masked_fill(~attention_mask[:, 1 : Tc + 1].bool(), IGNORE_INDEX)
        return losses.readout_loss(logits, target)

    # ------------------------------------------------------------------ DMT
    def dmt_parts(self, input_ids, labels, attention_mask=None, **_) -> dict[str, torch.Tensor]:
        """DAgger Memory Training (paper Sec. DMT; reference `forward_dmt`). Shapes: input_ids/labels (B, L).

        1. teacher memories m*_j at the rollout start and every k steps (one batched no-grad encoder call);
        2. the student rolls out Td steps on its own memories m_hat;
        3. losses: `dmt_dynamics` = MSE(f(m_hat_j, x_j), m*_{j+1}) at the matched steps; `readout` = CE of
           g(sg(m_hat_j)) against labels[start+j]; optional `dmt_teacher` (f on the teacher's own states,
           k=1), `dmt_replay` (DAgger aggregation: transitions visited by earlier rollouts) and `onestep_readout`
           (`lambda_onestep_readout`: the read-out, weights constant, of each matched f(m_hat_j, x_j) against
           labels[start+j+1]; gradient through that one step).

        `dmt_gradient="one_step"`: the rollout runs without gradient and the matched transitions are re-run
        in one batched call with gradient, so no gradient crosses more than one step (equal to detaching the
        memory after every step). `"full_rollout"`: the gradient flows through the whole Td-step rollout
        (truncated BPTT with dense teacher targets).
        """
        a = self.args
        B, L = input_ids.shape
        Td, k, Tc = a.rollout_length, a.dmt_stride, a.context_length
        start = Tc if a.dmt_start == "teacher" else 0
        if L < start + Td:
            raise ValueError(
                f"DMT needs sequences of >= {start + Td} tokens (start {start} + rollout_length {Td}), got {L}; "
                "lower `rollout_length` or use longer windows."
            )
        teacher = self.teacher
        if next(teacher.parameters()).device != input_ids.device:  # wrappers (FSDP) may move only the submodules
            teacher.to(input_ids.device)
        # 1. teacher memories at the start and after each matched step j (every k-th, or n random ones per row):
        #    one batched encoder call over (B*(n+1), Tc) contexts
        if a.dmt_matched_steps is not None:  # (B, n), fresh for every row and step
            js = torch.rand(B, Td, device=input_ids.device).argsort(1)[:, : a.dmt_matched_steps].sort(1).values
        else:
            js = torch.arange(k - 1, Td, k, device=input_ids.device).expand(B, -1)  # every k-th step, (B, n)
        ends = torch.cat([torch.full((B, 1), start, device=input_ids.device), start + js + 1], 1)  # (B, n+1)
        # right-padded rows: a matched step whose window runs past the row's end has no target (masked out)
        lengths = torch.full((B,), L, device=input_ids.device) if attention_mask is None else attention_mask.sum(1)
        valid = ends[:, 1:] <= lengths.view(-1, 1)  # (B, n)
        tokens = input_ids[:, start : start + Td]  # (B, Td) the tokens the rollout reads
        was_training = teacher.training
        teacher.eval()  # restored below, also on an error: the caller's teacher keeps its mode
        try:
            with torch.no_grad():
                ctx, ctx_mask = prefix_contexts(input_ids, ends, Tc, 0, attention_mask)  # (B, n+1, Tc)
                targets = teacher.encode(ctx.flatten(0, 1), ctx_mask.flatten(0, 1))
                targets = targets.view(B, ends.shape[1], *targets.shape[1:])  # (B, n+1, K, d)
        finally:
            teacher.train(was_training)
        m = targets[:, 0] if a.dmt_start == "teacher" else self.student.initial_memory(B)
        # 2. roll the student out on its own memories
        if a.dmt_gradient == "full_rollout":
            visited, matched = [], []
            for j in range(Td):
                visited.append(m)  # memory after x[:start+j]; its readout predicts labels[start+j]
                m = self.student_step(m, tokens[:, j])
                if (j + 1) % k == 0:
                    matched.append(m)
            visited = torch.stack(visited, 1)  # (B, Td, K, d)
            matched = torch.stack(matched, 1)  # (B, n, K, d)
        else:  # one_step: the rollout is a forward pass; the matched transitions get gradient in one batch
            with torch.no_grad():
                visited = [m]
                for j in range(Td - 1):
                    visited.append(self.student_step(visited[-1], tokens[:, j]))
                visited = torch.stack(visited, 1)  # (B, Td, K, d)
            # the start memory keeps its own gradient (one step: f(m_0, x_0) -> m*_1 trains a learned m_0)
            if k == 1:
                visited = torch.cat([m.unsqueeze(1), visited[:, 1:]], 1)
            n = js.shape[1]
            rows = torch.arange(B, device=input_ids.device).view(B, 1)
            prev = visited[rows, js].flatten(0, 1)  # (B*n, K, d)
            matched = self.student_step(prev, tokens[rows, js].flatten()).view(B, n, *prev.shape[1:])
        # 3. losses: memory matching at strided steps, readout CE on stop-gradient memories (one batched call)
        logits = self.student.readout(visited.detach())  # (B, Td, V)
        parts = {
            "dmt_dynamics": losses.dynamics_loss(matched, targets[:, 1:], valid),
            "readout": losses.readout_loss(logits, labels[:, start : start + Td]),
        }
        if a.lambda_onestep_readout > 0:  # one_step only (the arguments refuse full_rollout): f(m_hat_j, x_j), the
            # memory after x[:start+j+1], predicts labels[start+j+1] through the student's read-out, weights constant
            idx = start + js + 1  # (B, n)
            tgt = labels.gather(1, idx.clamp_max(L - 1)).masked_fill(idx >= L, IGNORE_INDEX)  # (B, n)
            parts["onestep_readout"] = losses.readout_loss(self.student.readout(matched, constant_weights=True), tgt)
        if a.dmt_teacher_transitions:  # the expert's own states (k = 1): f(m*_j, x_j) -> m*_{j+1}, time-parallel
            pred = self.student_step(targets[:, :-1].flatten(0, 1), tokens.flatten()).view_as(targets[:, 1:])
            parts["dmt_teacher"] = losses.dynamics_loss(pred, targets[:, 1:], valid)
        if self.replay is not None:  # DAgger aggregation: regress on transitions visited by earlier rollouts
            rows = torch.arange(B, device=input_ids.device).view(B, 1)
            prev = visited[rows, js].detach().flatten(0, 1)  # (B*n, K, d)
            keep = valid.flatten()
            old = self.replay.sample(min(len(self.replay), keep.numel()))
            if old is not None:
                pred = self.student_step(old[0], old[1])
                parts["dmt_replay"] = losses.dynamics_loss(pred, old[2])
            self.replay.add(prev[keep], tokens[rows, js].flatten()[keep], targets[:, 1:].flatten(0, 1)[keep])
        return parts

    # ------------------------------------------------------------------ BPTT
    def bptt_parts(self, input_ids, labels, attention_mask=None, **_) -> dict[str, torch.Tensor]:
        """Next-token CE of the student unrolled over input_ids (B, L) from m_0 (its `forward`, with `step_fn`):
        logits[t] against labels[t+1], mean over the targets, 0 (not NaN) for a batch without one (e.g. under a
        `seq_len_curriculum` before a task's first target)."""
        step = {} if self.step_fn is None else {"step_fn": self.step_fn}
        out = self.student(input_ids, attention_mask=attention_mask, use_cache=False, **step)
        return {"bptt": losses.readout_loss(out.logits[:, :-1], labels[:, 1:])}

    def decoder_weight(self, step: int) -> float:
        """`lambda_dec` at optimizer step `step` (0-based): 0 before `lambda_dec_start_step`, then a linear ramp over
        `lambda_dec_ramp_steps` steps (step start + i gets (i + 1) / ramp of it), then `lambda_dec`."""
        a = self.args
        if step < a.lambda_dec_start_step:
            return 0.0
        if a.lambda_dec_ramp_steps:
            return a.lambda_dec * min(1.0, (step - a.lambda_dec_start_step + 1) / a.lambda_dec_ramp_steps)
        return a.lambda_dec

    def label_horizon(self, step: int) -> int | None:
        """The `seq_len_curriculum` length at optimizer step `step` (0-based): stage step // seq_len_curriculum_steps,
        the last stage from then on. None without a curriculum."""
        lens = self.args.seq_len_curriculum
        return curriculum_length(lens, self.args.seq_len_curriculum_steps, step) if lens else None

    def weights(self, step: int | None = None) -> dict[str, float]:
        """Loss weight of every part at optimizer step `step` (None: the final weights, after any schedule)."""
        a = self.args
        return {
            "decoder": a.lambda_dec if step is None else self.decoder_weight(step),
            "dynamics": a.lambda_dyn,
            "uniformity": a.lambda_unif,
            "encoder_lm": a.lambda_encoder_lm,
            "first_step": a.lambda_first_step,
            "onestep_readout": a.lambda_onestep_readout,
            "dmt_dynamics": a.lambda_dmt_dyn,
            "readout": a.lambda_readout,
            "dmt_teacher": a.lambda_dmt_dyn,
            "dmt_replay": a.lambda_dmt_dyn,
            "bptt": 1.0,
        }

    # ------------------------------------------------------------------ activation checkpointing
    def _trained_models(self) -> tuple:
        return (self.student,) if self.mode == "dmt" else (self.student, self.teacher)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers: int = 1,
                                        offload: bool = False) -> None:
        """Activation checkpointing on the student and the teacher (what `SMTTrainingArguments(gradient_checkpointing=
        True)` calls): every Transformer block, residual MLP block and GRU cell is recomputed in the backward pass.
        Losses and gradients are those of the plain path. A frozen DMT teacher (encoded without gradient) is left
        as the caller built it."""
        for model in self._trained_models():
            if model is not None:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs, every_n_layers=every_n_layers,
                                                      offload=offload)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs) -> None:
        """Alias of `activation_checkpointing_enable` (the pre-5.23 name)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def activation_checkpointing_disable(self) -> None:
        for model in self._trained_models():
            if model is not None:
                model.activation_checkpointing_disable()

    gradient_checkpointing_disable = activation_checkpointing_disable


def curriculum_length(lengths: list[int], stage_steps: int, step: int) -> int:
    """The `seq_len_curriculum` length at optimizer step `step` (0-based): stage step // stage_steps, then the last."""
    return lengths[min(step // stage_steps, len(lengths) - 1)]


def mask_labels_from(labels: torch.Tensor, horizon: int) -> torch.Tensor:
    """`labels` (B, L) with positions t >= `horizon` set to -100 (a copy; `seq_len_curriculum`)."""
    out = labels.clone()
    out[:, horizon:] = IGNORE_INDEX
    return out


def make_student_standalone(student, teacher) -> None:
    """Alias of `student.init_from_teacher(teacher)` (readout := teacher decoder + head, m_0 := E(empty))."""
    student.init_from_teacher(teacher)


__all__ = ["SMTTrainingModule", "make_student_standalone"]
