"""smt_hf.viz.plot_bars: a run that is missing (NaN) draws no bar and, when asked, says so in the gap."""

import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from smt_hf import viz  # noqa: E402


@pytest.fixture
def figs(monkeypatch):
    """The figures plot_bars draws, in order (each still saved to its file)."""
    drawn = []
    save = viz._save
    monkeypatch.setattr(viz, "_save", lambda fig, path, dpi: (drawn.append(fig), save(fig, path, dpi))[1])
    return drawn


def test_missing_bars_are_named_in_the_gap_and_real_bars_keep_their_height(tmp_path, figs):
    series = {"teacher": [1.0, 0.5], "BPTT": [math.nan, 0.25]}
    path = viz.plot_bars(["a", "b"], series, tmp_path / "bars.png", missing="not run")
    assert path.exists() and viz.missing_bars(series["BPTT"]) == [0] and viz.missing_bars(series["teacher"]) == []
    ax = figs[0].axes[0]
    assert [t.get_text() for t in ax.texts] == ["not run"]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches if not math.isnan(p.get_height()))
    assert heights == [0.25, 0.5, 1.0]
    viz.plot_bars(["a", "b"], series, tmp_path / "plain.png")  # default: no text, as before
    assert len(figs[1].axes[0].texts) == 0


def test_points_draw_one_dot_per_value_on_their_bar(tmp_path, figs):
    """plot_bars(points=...): a dot per seed on its bar (a bar over one seed told from a mean over three)."""
    series = {"teacher": [1.0, 0.5], "BPTT": [math.nan, 0.25]}
    viz.plot_bars(["a", "b"], series, tmp_path / "bars.png", points={"teacher": [[0.9, 1.0, 1.1], [0.5]], "BPTT": [[], [0.25]]})
    ax = figs[0].axes[0]
    dots = sorted((float(x), float(y)) for c in ax.collections for x, y in c.get_offsets())
    bars = [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches if not math.isnan(p.get_height())]
    assert len(dots) == 5 and sorted(y for _, y in dots) == [0.25, 0.5, 0.9, 1.0, 1.1]
    assert all(any(lo < x < hi for lo, hi in bars) for x, _ in dots)  # each dot on a drawn bar
    assert len({x for x, y in dots if y in (0.9, 1.0, 1.1)}) == 3  # side by side: equal values would stay countable
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["teacher", "BPTT", "one seed"]
    viz.plot_bars(["a"], {"s": [1.0]}, tmp_path / "np.png", points={"s": [np.array([1.0, 1.0])]})  # arrays too
    assert len(figs[1].axes[0].collections[0].get_offsets()) == 2


def test_a_legend_wider_than_few_bars_is_not_clipped(tmp_path):
    """Fig 3 at T=64 had two families: its seven-entry legend and title ran past the figure's edges. Nothing drawn
    may touch the saved image's border (the canvas grows to hold it, with a white margin)."""
    from matplotlib.image import imread

    names = ["teacher", "SMT one-step", "SMT -> DMT one_step (no BPTT)", "SMT -> DMT full_rollout (truncated BPTT)",
             "BPTT, same wall-clock", "BPTT, 4x wall-clock"]
    series = {n: [0.5 + 0.05 * i, 0.9] for i, n in enumerate(names)}
    path = viz.plot_bars(["needle", "stack"], series, tmp_path / "two.png", title="Synthetic families, T=64: "
                         "standalone accuracy (teacher = reference), transformer student", points={names[0]: [[0.5], [0.9]]})
    img = imread(path)[..., :3]
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert border.min() > 0.99  # all white


def test_a_wide_legend_does_not_squeeze_the_axes(tmp_path, figs):
    """The T=64 control figure (three families, six long series names): tight_layout shrank the axes to a sliver
    to fit the legend inside the figure. The legend stays out of the layout; the axes keep most of the width."""
    names = ["SMT -> DMT one_step (no BPTT)", "DMT one_step from init (no SMT, no BPTT)",
             "DMT one_step from init, more steps (no SMT, no BPTT)", "SMT -> DMT full_rollout (truncated BPTT)",
             "DMT full_rollout from init (no SMT, truncated BPTT)",
             "DMT full_rollout from init, more steps (no SMT, truncated BPTT)"]
    series = {n: [0.9, 0.7, 0.5] for n in names}
    path = viz.plot_bars(["needle", "stack", "icl"], series, tmp_path / "control.png",
                         points={names[0]: [[0.9], [0.7], [0.5]]})
    assert figs[0].axes[0].get_position().width > 0.6  # a fraction of the figure's width
    from matplotlib.image import imread

    img = imread(path)[..., :3]
    assert np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).min() > 0.99  # the legend is saved, not clipped
    assert img.shape[1] > figs[0].get_figwidth() * 110  # the canvas grew past the figure (110 dpi) to hold it


def test_a_saved_figure_keeps_its_suptitle(tmp_path):
    """_save's canvas holds the figure's own artists as well as an out-of-layout legend: a suptitle (the SeqFLOPs
    plots') is saved, not cut off: there is dark text above the axes' top frame line."""
    from matplotlib.image import imread

    fig, (a, _) = viz._pyplot().subplots(1, 2, figsize=(6, 2.5))
    a.plot([0, 1], [0, 1], label="x")
    a.legend()
    fig.suptitle("A TITLE ABOVE BOTH PANELS", fontsize=14)
    dark = imread(viz._save(fig, tmp_path / "sup.png", 100))[..., :3].min(axis=2) < 0.5
    frame = int(np.argmax(dark.mean(axis=1) > 0.3))  # the first row dark across a third of the width: the frame top
    assert frame > 30  # px at 100 dpi: 60 with the title saved, 15 without (a tick label above the frame)


def test_a_missing_last_bar_keeps_its_slot_inside_the_axes(tmp_path, figs):
    """A NaN bar is not autoscaled: when the last series of the last group is missing, its "not run" note sat on
    the axes' right edge. Every bar slot, drawn or not, lies inside the x-limits."""
    series = {"teacher": [1.0, 0.9], "BPTT": [0.5, 0.8], "BPTT 4x": [math.nan, math.nan]}
    viz.plot_bars(["a", "b"], series, tmp_path / "bars.png", missing="not run")
    ax = figs[0].axes[0]
    lo, hi = ax.get_xlim()
    w = 0.8 / len(series)
    notes = [t.get_position()[0] for t in ax.texts]
    assert len(notes) == 2 and all(lo < x - w / 2 and x + w / 2 < hi for x in notes)
