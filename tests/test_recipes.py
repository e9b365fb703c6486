"""recipes/smt.py end to end with a tiny config: phases run in order, the standalone student is saved and
reloads with no teacher, and the summary holds each phase's evaluation."""

import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import smt as recipe  # noqa: E402

from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel  # noqa: E402


def tiny_config(tmp_path):
    config = recipe.load_config(os.path.join(ROOT, "recipes", "configs", "needle_cpu.yaml"),
                                ["phases.0.max_steps=3", "phases.1.max_steps=2", f"output_dir={tmp_path}",
                                 "data.num_train=256", "data.num_eval=32", "data.seq_len=16",
                                 "common.future_length=16", "common.rollout_length=16", "common.logging_steps=1",
                                 "teacher.hidden_size=32"])
    return config


def test_load_config_overrides(tmp_path):
    config = tiny_config(tmp_path)
    assert config["phases"][0]["max_steps"] == 3 and config["phases"][1]["mode"] == "dmt"
    assert config["data"]["seq_len"] == 16 and config["output_dir"] == str(tmp_path)


def test_main_runs_phases_and_saves_standalone_student(tmp_path):
    summary = recipe.main(tiny_config(tmp_path))
    assert [p["mode"] for p in summary["phases"]] == ["joint", "dmt"]
    assert [p["steps"] for p in summary["phases"]] == [3, 2]
    for p in summary["phases"]:
        assert {"teacher_acc", "onestep_acc", "student_acc", "drift_mean"} <= set(p["eval"])
    on_disk = json.load(open(tmp_path / "summary.json"))
    assert on_disk["phases"][1]["eval"]["student_acc"] == summary["phases"][1]["eval"]["student_acc"]
    student = SMTRecurrentForCausalLM.from_pretrained(tmp_path / "final" / "student").eval()
    teacher = SMTTeacherModel.from_pretrained(tmp_path / "final" / "teacher").eval()
    # DMT trains m_0 too, so compare the readout copy only through a fresh memory
    m = teacher.encode(torch.tensor([[3, 4, 0, 7]]))
    assert student.readout(m).shape == (1, 16)
    prompt = torch.tensor([summary["sample"]["prompt"]])
    again = student.generate(prompt, max_new_tokens=len(summary["sample"]["continuation"]), do_sample=False)
    assert again[0, prompt.shape[1]:].tolist() == summary["sample"]["continuation"]


def test_dmt_ablation_report_one_table_per_length_and_seed():
    """dmt_ablation --report: runs of different T get their own table (and header naming T), in input order."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
    import dmt_ablation

    def run(T, acc):
        return {"seq_len": T, "seed": 0, "machine": "m", "threads": 1, "smt_steps": 9, "dmt_steps": 3, "dmt_lr": 3e-4,
                "rows": [{"smt": "joint SMT", "dmt": "v", "steps": 3, "seconds": 1.0, "teacher_acc": 1.0,
                          "onestep_acc": 1.0, "student_acc": acc, "drift_mean": 0.1, "drift_last": 0.2}]}

    md = dmt_ablation.render([run(32, 0.5), run(64, 0.25), run(32, 0.75)])
    tables = md.split("needle retrieval ")[1:]
    assert [t.split(",")[0] for t in tables] == ["T=32", "T=64"]
    assert "0.500" in tables[0] and "0.750" in tables[0] and "0.250" in tables[1]


def test_update_readme_shows_the_archived_report_as_superseded(tmp_path, monkeypatch):
    """The retired reproduce.py report is rendered from recipes/results/archive/, headed as superseded, with its
    links pointing into the archive (and every link of the shipped archive resolving to a file)."""
    import re

    import update_readme

    text = update_readme.paper_section()
    assert text.startswith("### Earlier evidence, archived and superseded")
    links = re.findall(r"\]\((recipes/[^)]+)\)", text)
    assert links and all(link.startswith("recipes/results/archive/") for link in links)
    assert all(os.path.isfile(os.path.join(ROOT, link)) for link in links)
    (tmp_path / "RESULTS.md").write_text("## Results\n\nintro\n\n### 1. x\n\n![s](repro_s.png) [r](README.md)\n")
    monkeypatch.setattr(update_readme, "ARCHIVE", str(tmp_path))
    assert update_readme.paper_section().endswith(
        "intro\n\n#### 1. x\n\n![s](recipes/results/archive/repro_s.png) [r](recipes/results/archive/README.md)")


def test_update_readme_check_writes_nothing_and_the_shipped_readme_is_up_to_date(tmp_path, monkeypatch):
    """`--check` (and `--help`) wrote README.md before: any call rewrote it. Now --check only compares: the
    shipped README's Results section is what the committed results give (exit 0), a stale one exits 1, untouched."""
    import update_readme

    assert update_readme.main(["--check"]) == 0
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{update_readme.START}\nstale\n{update_readme.END}\n")
    monkeypatch.setattr(update_readme, "ROOT", str(tmp_path))
    assert update_readme.main(["--check"]) == 1 and "stale" in readme.read_text()
    try:
        update_readme.main(["--help"])
    except SystemExit as e:  # argparse's --help
        assert e.code == 0
    assert "stale" in readme.read_text()


def test_update_readme_points_result_images_into_recipes_results():
    import update_readme

    md = "a ![x](needle_e2e_T32_seqflops.png) b ![y](recipes/results/z.png) ![w](https://h/p.png)"
    assert update_readme._results_links(md) == ("a ![x](recipes/results/needle_e2e_T32_seqflops.png) b "
                                                "![y](recipes/results/z.png) ![w](https://h/p.png)")


def test_update_readme_fig3_section_links_into_the_fig3_folder(tmp_path, monkeypatch):
    import update_readme

    (tmp_path / "fig3").mkdir()
    (tmp_path / "fig3" / "fig3_T32.md").write_text("table\n\n![Fig 3](fig3_T32.png)\n")
    monkeypatch.setattr(update_readme, "RESULTS", str(tmp_path))
    text = update_readme.fig3_section()
    assert text.startswith("### Fig 3: the synthetic families, SMT vs BPTT\n\n#### T=32 (")
    assert text.endswith("table\n\n![Fig 3](recipes/results/fig3/fig3_T32.png)\n")
    monkeypatch.setattr(update_readme, "RESULTS", str(tmp_path / "none"))
    assert update_readme.fig3_section() == ""


def test_update_readme_end_to_end_section_reads_the_recipe_model_runs_from_fig3(tmp_path, monkeypatch):
    """The needle/parity end-to-end tables come from recipes/results/fig3 (one copy of each run, the one the Fig 3
    table reads), only for runs of the recipe's own model (no `family`); a --family run's table is linked from Fig 3
    instead. (A second, older copy of the needle runs under recipes/results/ showed one BPTT seed of three.)"""
    import json

    import update_readme

    fig3 = tmp_path / "fig3"
    fig3.mkdir()
    for name, family in (("needle_e2e_T8", None), ("stack_e2e_T8", "stack")):
        (fig3 / f"{name}.md").write_text(f"{name} table\n\n![acc](x.png)\n")
        json.dump({"task": name.split("_")[0], "family": family, "rows": []}, open(fig3 / f"{name}_s0.json", "w"))
    (fig3 / "needle_e2e_T8_s0_drift.png").write_bytes(b"")
    (tmp_path / "needle_e2e_T8.md").write_text("an old copy outside fig3\n")
    monkeypatch.setattr(update_readme, "RESULTS", str(tmp_path))
    monkeypatch.setattr(update_readme, "ROOT", str(tmp_path.parent))
    text = update_readme.needle_section()
    assert "needle_e2e_T8 table\n\n![acc](recipes/results/fig3/x.png)" in text
    assert f"![drift]({tmp_path.name}/fig3/needle_e2e_T8_s0_drift.png)" in text
    assert "stack_e2e_T8 table" not in text and "an old copy" not in text


def test_update_readme_control_section_shows_the_re_runs_control_tables(tmp_path, monkeypatch):
    """The DMT-from-init control on re-runs (fig3/dmt_from_init/fig3_T<T>.md, written by e2e_report.fig3) reaches the
    README: its control table and figure (links into that folder) and the runs' machine, not the re-runs' own Fig 3
    table above it; a T without the control: none; a control table with no machine line: refused."""
    import pytest

    import needle_e2e as n
    import update_readme

    folder = tmp_path / "fig3" / "dmt_from_init"
    folder.mkdir(parents=True)

    def row(name, acc):
        return {"run": name, "steps": 5, "seconds": 10.0, "teacher_acc": 1.0, "onestep_acc": 0.9, "student_acc": acc}

    for T, rows in ((64, [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.9), row(n.FROM_INIT[0], 0.1)]), (16, [row(n.ROWS[1], 0.9)]),
                    (128, [row(n.ROWS[1], 0.8), row(n.FROM_INIT[0], 0.2)])):
        json.dump({"task": "stack", "family": "stack", "seq_len": T, "seed": 0, "machine": "CPU Q, 2 cores",
                   "rows": rows}, open(folder / f"stack_e2e_T{T}_s0.json", "w"))
        n.fig3(str(folder), T)
    monkeypatch.setattr(update_readme, "RESULTS", str(tmp_path))
    text = update_readme.control_section()
    assert text.startswith("### The control: DMT without SMT, on re-runs\n\n#### T=64, on re-runs")
    assert "T=16" not in text  # no control at T=16
    assert text.index("#### T=64,") < text.index("#### T=128,")  # by T, not by the file name's characters
    body = text.split("Machine: CPU Q, 2 cores.\n\nThe control, DMT without SMT (", 1)[1].split("#### T=128", 1)[0]
    assert "| stack | 0.90 (n=1, 10 s) | 0.10 (n=1, 10 s) |" in body
    assert body.rstrip().endswith("![DMT without SMT](recipes/results/fig3/dmt_from_init/dmt_from_init_T64.png)")
    assert text.endswith("![DMT without SMT](recipes/results/fig3/dmt_from_init/dmt_from_init_T128.png)\n")
    assert "| teacher |" not in text  # the re-runs' own Fig 3 table stays in the folder
    (folder / "fig3_T128.md").unlink()
    (folder / "fig3_T64.md").write_text("a table\n\nThe control, DMT without SMT (x): table\n")
    with pytest.raises(ValueError, match="no 'Machine"):
        update_readme.control_section()
    monkeypatch.setattr(update_readme, "RESULTS", str(tmp_path / "none"))
    assert update_readme.control_section() == ""


def test_a_synthetic_task_of_256_tokens_gets_no_byte_tokenizer(tmp_path):
    """Any run with 256 tokens was treated as byte text: needle with vocab_size=256 saved a byte tokenizer with its
    student and printed its sample as bytes. Only task 'text' is byte text."""
    config = tiny_config(tmp_path)
    config["data"]["vocab_size"] = 256
    config["phases"] = config["phases"][:1]
    summary = recipe.main(config)
    assert SMTRecurrentForCausalLM.from_pretrained(tmp_path / "final" / "student").config.vocab_size == 256
    assert not (tmp_path / "final" / "student" / "tokenizer_config.json").exists()
    assert "prompt_text" not in summary["sample"] and "continuation_text" not in summary["sample"]
