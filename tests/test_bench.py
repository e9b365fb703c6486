"""recipes/bench.py at dry-run size: the prefill and prefixes sections measure both paths at every size, and
--merge re-runs one section while keeping the others (no timing is asserted: CI machines vary)."""

import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import bench  # noqa: E402


def test_prefill_section_and_merge(tmp_path):
    out = tmp_path / "bench.json"
    first = bench.main(["--preset", "cpu", "--dry-run", "--sections", "dmt", "--out", str(out), "--no-plot"])
    assert [r["variant"] for r in first["dmt"]] and "prefill" not in first
    res = bench.main(["--preset", "cpu", "--dry-run", "--sections", "prefill,prefixes", "--merge", "--out", str(out), "--no-plot"])
    assert res["merged"]["sections"] == ["dmt"] and res["dmt"] == json.loads(json.dumps(first["dmt"]))
    rows = res["prefill"]
    assert {(r["B"], r["prompt"]) for r in rows} == {(B, T) for B in bench.DRY["prefill"]["batches"]
                                                    for T in bench.DRY["prefill"]["prompts"]}
    assert all(r["recurrent_ms"] > 0 and r["parallel_ms"] > 0 and r["Tc"] == bench.DRY["smt"]["Tc"] for r in rows)
    assert any(k.startswith("prefill_B1_parallel_speedup") for k in res["summary"])
    pre = res["prefixes"]  # the all-prefix path supervises T transitions per sequence, the split path one
    for T in bench.DRY["prefixes"]["Ts"]:
        one = next(r for r in pre if r["T"] == T and r["path"] == "one split per sequence")
        allp = next(r for r in pre if r["T"] == T and r["path"] == "all prefixes")
        assert allp["transitions_per_step"] == T * one["transitions_per_step"] == T * bench.DRY["prefixes"]["B"]
    md = out.with_suffix(".md").read_text()
    assert "Time to first token" in md and "transitions per second" in md and "come from an earlier run" in md and "## DMT training step" in md
    assert json.loads(out.read_text())["merged"]["sections"] == ["dmt"]
    before = out.read_text()  # a merge with other settings kept the old sections under this run's labels
    with pytest.raises(SystemExit, match="a run of dry_run=True, with dry_run=False"):
        bench.main(["--preset", "cpu", "--sections", "prefill", "--merge", "--out", str(out), "--no-plot"])
    # other threads or compile settings: the kept sections were measured otherwise (they were merged silently)
    threads = first["machine"]["threads"]
    try:
        with pytest.raises(SystemExit, match=f"a run of threads={threads}, with threads={threads + 1}"):
            bench.main(["--preset", "cpu", "--dry-run", "--threads", str(threads + 1), "--sections", "prefill",
                        "--merge", "--out", str(out), "--no-plot"])
    finally:
        torch.set_num_threads(threads)  # bench.main set this process's threads
    compiled = json.loads(before)
    compiled["config"]["compile"] = not compiled["config"]["compile"]  # a run measured with the other setting
    out.write_text(json.dumps(compiled))
    with pytest.raises(SystemExit, match=f"a run of compile={not first['config']['compile']}, with compile="):
        bench.main(["--preset", "cpu", "--dry-run", "--sections", "prefill", "--merge", "--out", str(out), "--no-plot"])
    assert json.loads(out.read_text()) == compiled
    with pytest.raises(SystemExit):  # an unknown section was an empty run with rc 0
        bench.build_parser().parse_args(["--sections", "dmt,bogus"])


def test_figure_panels_follow_the_results(tmp_path):
    """Each panel plots what its section measured: one curve per (model, batch) with one point per context."""
    out = tmp_path / "bench.json"
    res = bench.main(["--preset", "cpu", "--dry-run", "--sections", "train_sweep,generation", "--out", str(out)])
    panels = {p["title"]: p["curves"] for p in bench.plot_panels_for(res)}
    assert set(panels) == {"decode latency vs context", "state size vs context", "training step vs sequence length"}
    g = bench.DRY["gen"]
    for title in ("decode latency vs context", "state size vs context"):
        assert set(panels[title]) == {f"{m} B{B}" for m in ("student fast", "llama kv-cache") for B in g["batches"]}
        assert all(list(xs) == list(g["contexts"]) for xs, _ in panels[title].values())
    state = panels["state size vs context"]  # the student's state is flat in context, the KV cache grows
    assert len(set(state["student fast B1"][1])) == 1 and state["llama kv-cache B1"][1][-1] > state["llama kv-cache B1"][1][0]
    assert set(panels["training step vs sequence length"]) == {"SMT", "BPTT"}
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_killed_run_leaves_finished_sections_that_render(tmp_path, monkeypatch):
    """Each finished section is saved to <out>.partial.json; a run killed later (device time limit) still leaves
    those numbers, and --report-only renders them. A run that finishes removes the partial file."""
    out = tmp_path / "bench.json"

    def killed(P, device, res):
        res["generation"] = [dict(model="student fast", B=1, context=16, ms_per_token=1.0, tokens_per_s=1000.0,
                                  prefill_s=0.1, state_bytes=128, peak_bytes=None, peak_total_bytes=None)]  # measured
        raise KeyboardInterrupt  # what the device's timeout (or --isolate's SIGTERM to a child) does next

    real = bench.bench_generation
    monkeypatch.setattr(bench, "bench_generation", killed)
    try:
        bench.main(["--preset", "cpu", "--dry-run", "--sections", "dmt,generation", "--out", str(out), "--no-plot"])
    except KeyboardInterrupt:
        pass
    partial = out.with_suffix(".partial.json")
    assert not out.exists() and partial.exists()
    saved = json.loads(partial.read_text())
    assert saved["partial"] and [r["variant"] for r in saved["dmt"]]
    assert saved["generation"][0]["ms_per_token"] == 1.0 and saved["errors"] == {"generation": "interrupted"}
    res = bench.main(["--report-only", "--out", str(partial), "--no-plot"])
    assert "## DMT training step" in partial.with_suffix(".md").read_text() and "summary" in res
    monkeypatch.setattr(bench, "bench_generation", real)
    bench.main(["--preset", "cpu", "--dry-run", "--sections", "dmt", "--out", str(out), "--no-plot"])
    assert out.exists() and not partial.exists()


def test_train_step_is_the_trainers_own_step(tmp_path):
    """smt_hf.benchmark.TrainStep is one step of SMTTrainer.train: same batch, same loss, per-model clipping and optimizer ->
    the same parameters after one step (joint mode, gradients clipped hard so clipping matters)."""
    import torch
    from datasets import Dataset

    from smt_hf import SMTTrainer, SMTTrainingArguments
    from smt_hf.benchmark import TrainStep, random_seqs
    from smt_hf.benchmark_sections import build_models

    mc = bench.DRY["model"]
    seqs = random_seqs(4, 12, mc["V"])
    kw = dict(output_dir=str(tmp_path), mode="joint", context_length=8, future_length=4, split="last", lambda_unif=0.0,
              max_grad_norm=0.01, learning_rate=1e-2, warmup_steps=0, report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no")
    teacher, student = build_models(mc, 8, torch.device("cpu"))
    TrainStep(student, teacher, SMTTrainingArguments(**kw), seqs, torch.device("cpu"), None)()
    student.init_from_teacher(teacher)  # as SMTTrainer.train does at its end
    t2, s2 = build_models(mc, 8, torch.device("cpu"))
    SMTTrainer(model=s2, teacher=t2, args=SMTTrainingArguments(max_steps=1, per_device_train_batch_size=4, **kw),
               train_dataset=Dataset.from_dict({"input_ids": seqs.tolist()})).train()
    for (name, a), b in zip([*teacher.named_parameters(), *student.named_parameters()],
                            [*t2.parameters(), *s2.parameters()]):
        assert torch.allclose(a, b, atol=1e-6), name
    t3, _ = build_models(mc, 8, torch.device("cpu"))
    assert not torch.allclose(next(t3.parameters()), next(teacher.parameters()))  # the step did change them


def test_train_compile_section_times_every_mode_with_the_same_losses(tmp_path, monkeypatch):
    """The train_compile section: one row per training mode from compare_compiled (both paths' losses equal), its
    table in the markdown, and a ratio per mode in the summary. Compile mode 'none' (the installed sync-free
    eager step) keeps the test fast; the shipped CPU run uses 'default'."""
    monkeypatch.setitem(bench.DRY, "train_compile", dict(bench.DRY["train_compile"], mode="none"))
    out = tmp_path / "bench.json"
    res = bench.main(["--preset", "cpu", "--dry-run", "--sections", "train_compile", "--out", str(out), "--no-plot"])
    rows = res["train_compile"]
    assert [r["mode"] for r in rows] == ["smt (joint)", "dmt", "bptt"] and {r["compile_mode"] for r in rows} == {"none"}
    for r in rows:
        assert r["losses"]["eager"] == r["losses"]["compiled"] and len(r["losses"]["eager"]) == 1 + bench.DRY["train_compile"]["iters"]
        assert res["summary"][f"train_{r['mode'].split()[0]}_eager_over_compiled"] == r["ratio"]
    md = out.with_suffix(".md").read_text()
    assert "eager vs compiled recurrent step" in md and "recurrent_step_compile='none'" in md


def test_isolated_sections_run_in_their_own_process(tmp_path):
    """--isolate: each section runs in a child process and its numbers land in the one run's JSON (no per-section
    files left behind); a section still running when --budget-seconds is spent is stopped and named as an error."""
    out = tmp_path / "bench.json"
    res = bench.main(["--preset", "cpu", "--dry-run", "--isolate", "--sections", "prefill", "--out", str(out), "--no-plot"])
    assert res["isolated"] and "errors" not in res
    assert {(r["B"], r["prompt"]) for r in res["prefill"]} == {(B, T) for B in bench.DRY["prefill"]["batches"]
                                                               for T in bench.DRY["prefill"]["prompts"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md"]
    assert "Each section ran in its own process" in out.with_suffix(".md").read_text()
    res = bench.main(["--preset", "cpu", "--dry-run", "--isolate", "--budget-seconds", "2", "--sections", "dmt,prefill",
                      "--out", str(out), "--no-plot"])  # the child cannot even import torch in 2 s
    assert "dmt" not in res and "prefill" not in res
    assert res["errors"]["dmt"].startswith("section process ended without results (stopped after 2 s")
    assert res["errors"]["prefill"] == "not run: --budget-seconds spent"
    assert "Sections that failed" in out.with_suffix(".md").read_text()


def test_compile_nan_probe_replays_the_step_and_names_non_finite_gradients(tmp_path, monkeypatch):
    """recipes/compile_nan_probe.py at dry size: aot_eager runs eager's step exactly (same losses, gradient norms),
    its Gram-matrix uniformity equals smt_hf.losses.uniformity_loss, and grad_report names a non-finite gradient."""
    import torch

    import compile_nan_probe as probe
    import pytest

    from smt_hf import losses
    from smt_hf.losses import uniformity_loss

    out = tmp_path / "probe.json"
    cudnn = torch.backends.cuda.cudnn_sdp_enabled()
    probe.main(["--preset", "dry", "--variants", "eager,aot_eager", "--eager-steps", "1", "--budget-seconds", "1e-9",
                "--out", str(out)])  # budget spent before the first variant: none starts
    assert [r["error"] for r in json.loads(out.read_text())["rows"]] == ["not run: --budget-seconds spent"] * 2
    probe.main(["--preset", "dry", "--variants", "eager,aot_eager", "--eager-steps", "1", "--steps", "2",
                "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    # the flag and loss variants' set-up and undoing, without Inductor's minutes of CPU compilation
    compile_calls = []
    monkeypatch.setattr(probe.torch, "compile", lambda m, backend=None: compile_calls.append(backend) or m)
    probe.main(["--preset", "dry", "--variants", "inductor_no_cudnn_sdp,inductor_gram_uniformity", "--eager-steps",
                "1", "--steps", "1", "--out", str(tmp_path / "flags.json")])
    assert compile_calls == ["inductor", "inductor"]
    assert torch.backends.cuda.cudnn_sdp_enabled() == cudnn and losses.uniformity_loss is uniformity_loss
    flags = json.loads((tmp_path / "flags.json").read_text())["rows"]
    assert [r["loss"] for r in flags] == pytest.approx([rows[0]["loss"]] * 2, abs=1e-5)  # Gram form: same value
    eager, aot = ([r for r in rows if r["variant"] == v] for v in ("eager", "aot_eager"))
    assert len(eager) == len(aot) == 2 and all(r["nonfinite_grads"] == 0 and r["weights_finite_after"] for r in rows)
    assert [r["loss"] for r in eager] == [r["loss"] for r in aot]
    assert [r["parts"] for r in eager] == [r["parts"] for r in aot]
    m = torch.randn(3, 4, 8)
    m[1] = m[0]  # coincident tokens (distance 0) included
    assert torch.allclose(probe.gram_uniformity_loss(m), uniformity_loss(m), atol=1e-5)
    many = torch.randn(40, 8)  # more tokens than num_samples: the same subsample for the same generator seed
    assert torch.allclose(probe.gram_uniformity_loss(many, 16, generator=torch.Generator().manual_seed(3)),
                          uniformity_loss(many, 16, generator=torch.Generator().manual_seed(3)), atol=1e-5)
    lin = torch.nn.Linear(2, 2)
    lin(torch.ones(1, 2)).sum().backward()
    lin.weight.grad[0, 0] = float("nan")
    assert probe.grad_report(lin)[1] == ["weight"]


def test_train_compile_keeps_finished_modes_and_uses_the_dtype_tolerance(monkeypatch):
    """A mode whose losses differ (the H200's DMT row) keeps the modes measured before it in the results (the joint
    row was lost there), and every comparison gets the autocast dtype's tolerance (smt_hf.benchmark.loss_rtol)."""
    import pytest
    import torch

    import smt_hf.benchmark_sections as sections
    from smt_hf.benchmark import loss_rtol

    seen = []

    def fake_compare(make, mode, device, iters, rtol):
        seen.append(rtol)
        if len(seen) == 2:
            raise AssertionError("recurrent_step_compile='default' changed the loss at step(s) [0]")
        return dict(eager_ms=2.0, compiled_ms=1.0, ratio=2.0, compile_s=0.0, max_loss_diff=0.0, losses={})

    monkeypatch.setattr(sections, "compare_compiled", fake_compare)
    res = {}
    with pytest.raises(AssertionError, match="changed the loss"):
        sections.bench_train_compile({**bench.PRESETS["cpu"], **bench.DRY, "autocast": torch.bfloat16},
                                     torch.device("cpu"), res)
    assert seen == [loss_rtol(torch.bfloat16)] * 2 == [1e-2] * 2
    assert [r["mode"] for r in res["train_compile"]] == ["smt (joint)"]
