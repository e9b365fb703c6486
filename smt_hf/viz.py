"""Figures: PNG grids of pixel sequences and line plots of curves (matplotlib, Agg backend).

matplotlib is the optional extra `plots` (`pip install 'smt-hf[plots]'`); nothing in the core package imports
this module, so `import smt_hf` and training never need it."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["save_pixel_grid", "plot_curves", "plot_panels", "plot_bars", "plot_gradient_norms"]


PLOTS_INSTALL = "pip install 'smt-hf[plots]'"


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(f"smt_hf.viz draws with matplotlib, an optional extra: `{PLOTS_INSTALL}` "
                          "(or `pip install matplotlib`).") from e

    matplotlib.use("Agg", force=False)  # headless; no-op if a backend is already in use
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int) -> Path:
    """Write `fig` to `path` (parent folders created) and close it. The saved canvas grows to hold every artist
    (`bbox_inches="tight"`; a legend kept out of tight_layout is put back in before saving): a legend or title wider
    than a narrow figure, e.g. a bar chart of one or two groups, is never clipped."""
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:  # kept out of tight_layout only: the
        if legend is not None:  # saved canvas holds them (the figure is closed below)
            legend.set_in_layout(True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def save_pixel_grid(
    sequences,
    path: str | Path,
    height: int = 28,
    width: int = 28,
    ncols: int = 8,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Path:
    """Write a PNG grid of pixel-token sequences (raster order, 0..255), light strokes on black.

    Args:
        sequences: (N, height*width) array-like (lists, arrays or tensors); -100 / out-of-range
            values (e.g. unfinished generations) are clipped to 0..255.
        path: output PNG path (parent folders are created).
        ncols: images per row.
        titles: optional N short titles (e.g. the digit or "generated").
    Returns:
        The path written.
    """
    seqs = [np.asarray(s.tolist() if hasattr(s, "tolist") else s, dtype=np.int64).reshape(-1) for s in sequences]
    if not seqs:
        raise ValueError("save_pixel_grid: no sequences given")
    if any(s.size != height * width for s in seqs):
        raise ValueError(f"save_pixel_grid: every sequence needs height*width = {height * width} tokens")
    if titles is not None and len(titles) != len(seqs):
        raise ValueError(f"save_pixel_grid: got {len(titles)} titles for {len(seqs)} sequences")
    plt = _pyplot()
    n = len(seqs)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.3 * nrows + (0.3 if suptitle else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = np.clip(seqs[i], 0, 255).reshape(height, width)  # (H, W)
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _save(fig, path, 100)


def _draw_curves(ax, x, curves, title=None, xlabel="step", ylabel="", logy=False, logx=False, markers=False,
                 data_xticks=True, hline=None):
    """Draw named curves on one matplotlib axis (see `plot_curves` for the arguments; `hline`: a dashed
    horizontal reference line at that y, e.g. a target accuracy)."""
    if not curves:
        raise ValueError("plot_curves: no curves given")
    seen_x = set()
    for i, (name, ys) in enumerate(curves.items()):
        if isinstance(ys, tuple) and len(ys) == 2:
            xs, ys = ys
        else:
            xs = x if x is not None else np.arange(len(ys))
        if len(xs) != len(ys):
            raise ValueError(f"plot_curves: curve {name!r} has {len(ys)} values for {len(xs)} x values")
        ax.plot(xs, ys, label=name, marker="o" if markers else None, markersize=3,
                linestyle=("-", "--", ":")[(i // 10) % 3])  # the colour cycle has 10 colours
        seen_x.update(float(v) for v in xs)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
        if data_xticks and len(seen_x) <= 8:  # label the measured x values themselves (e.g. 256, 1024, 4096), not 10^k
            from matplotlib.ticker import NullFormatter

            ax.set_xticks(sorted(seen_x), [f"{v:g}" for v in sorted(seen_x)])
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if hline is not None:
        ax.axhline(hline, color="gray", linestyle="--", linewidth=0.8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7 if len(curves) <= 8 else 5)


def plot_curves(
    x,
    curves: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str | None = None,
    xlabel: str = "step",
    ylabel: str = "",
    logy: bool = False,
    logx: bool = False,
    markers: bool = False,
    data_xticks: bool = True,
) -> Path:
    """Line plot of several named curves against ``x``; write a PNG.

    Args:
        x: shared x values (length M), or ``None`` to use ``0..M-1`` per curve.
        curves: name -> y values; a value may also be an ``(x, y)`` pair for its own x axis.
        path: output PNG path (parent folders are created).
        logy / logx: log-scale axes.
        data_xticks: with `logx` and at most 8 distinct x values, tick exactly those values (e.g. 256, 1024);
            False keeps matplotlib's decades.
    Returns:
        The path written.
    """
    if not curves:
        raise ValueError("plot_curves: no curves given")
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.6))
    _draw_curves(ax, x, curves, title, xlabel, ylabel, logy, logx, markers, data_xticks)
    return _save(fig, path, 120)


def plot_panels(panels: Sequence[Mapping], path: str | Path, suptitle: str | None = None, ncols: int = 2) -> Path:
    """Several line plots side by side in one PNG.

    Args:
        panels: one dict per panel with ``plot_curves``'s keyword arguments (``curves`` required; ``x``,
            ``title``, ``xlabel``, ``ylabel``, ``logx``, ``logy``, ``markers``, ``data_xticks`` optional) and
            ``hline`` (a dashed horizontal line at that y, e.g. a target).
        path: output PNG path (parent folders are created).
        suptitle: a title over all panels.
        ncols: panels per row.
    Returns:
        The path written.
    """
    if not panels:
        raise ValueError("plot_panels: no panels given")
    plt = _pyplot()
    ncols = max(1, min(ncols, len(panels)))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.4 * nrows), squeeze=False)
    for ax, kw in zip(axes.flat, panels):
        kw = dict(kw)
        _draw_curves(ax, kw.pop("x", None), kw.pop("curves"), **kw)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save(fig, path, 110)


def missing_bars(values: Sequence[float]) -> list[int]:
    """Indices of the NaN values of one `plot_bars` series (the bars it does not draw)."""
    return [i for i, v in enumerate(values) if v != v]


def plot_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = (0, 1.05),
    errors: Mapping[str, Sequence[float]] | None = None,
    missing: str | None = None,
    points: Mapping[str, Sequence[Sequence[float]]] | None = None,
) -> Path:
    """Grouped bar chart: one group per label, one bar per named series (values aligned with `labels`); `errors`
    (same keys, optional) draws a +-error bar on each bar (e.g. the half-range over seeds). NaN values draw no bar;
    with `missing` (e.g. "not run") that text is written upright in the gap, so a missing run never reads as 0.
    `points` (same keys, optional): per label the individual values behind a bar (e.g. one per seed), drawn as dots
    side by side on it, so a bar over one seed is told from a mean over three."""
    if not series:
        raise ValueError("plot_bars: no series given")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, (0.25 * len(series) + 0.5) * len(labels)), 3.6 + 0.25 * len(series)))
    x, w = np.arange(len(labels)), 0.8 / len(series)
    for j, (name, ys) in enumerate(series.items()):
        err = (errors or {}).get(name)
        pos = x + (j - (len(series) - 1) / 2) * w
        ax.bar(pos, ys, w, label=name, yerr=err, capsize=2 if err is not None else 0)
        for i, vals in enumerate((points or {}).get(name, ())):
            if len(vals):  # side by side across the bar's middle half, so equal values stay countable
                dx = np.linspace(-w / 4, w / 4, len(vals)) if len(vals) > 1 else np.zeros(1)
                ax.scatter(pos[i] + dx, vals, s=6, color="black", zorder=3)
        for i in missing_bars(ys) if missing else ():
            ax.text(pos[i], 0.02, missing, rotation=90, ha="center", va="bottom", fontsize=6, color="0.4",
                    transform=ax.get_xaxis_transform())  # x in data, y in axes units: at the bottom whatever ylim
    ax.set_xticks(x)
    ax.set_xlim(-0.5, len(labels) - 0.5)  # every bar's slot, drawn or missing: a NaN bar is not autoscaled
    ax.set_xticklabels(labels, fontsize=7, rotation=15 if len(labels) > 4 else 0)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    handles, names = ax.get_legend_handles_labels()
    if points:  # one legend entry for the dots, after the series
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], marker="o", linestyle="", color="black", markersize=2.5))
        names.append("one seed")
    legend = ax.legend(handles, names, fontsize=7, ncol=min(len(names), 3), loc="lower center",
                       bbox_to_anchor=(0.5, 1.08))
    legend.set_in_layout(False)  # tight_layout must not shrink the axes to fit a legend wider than a few groups;
    return _save(fig, path, 110)  # _save grows the canvas to hold it


def plot_gradient_norms(lines: Sequence[tuple[str, str, Sequence[float]]], path: str | Path, title: str = "",
                        dpi: int = 120) -> Path:
    """||dL/dm_t|| against t on a log scale (paper Fig 11; the numbers of `smt_hf.analysis.bptt_gradient_norms` /
    `smt_hf.analysis.smt_gradient_norms`): one line per `(group, init, norms)`, a colour per group (e.g. "BPTT gru")
    and a line style per init label; each (group, init) pair is named once in the legend. Returns the PNG path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    colors, styles, seen = {}, {}, set()
    for group, init, v in lines:
        c = colors.setdefault(group, f"C{len(colors)}")
        ls = styles.setdefault(init, ["-", "--", ":", "-."][len(styles) % 4])
        label = f"{group}, init std {init}" if (group, init) not in seen else None
        seen.add((group, init))
        ax.plot(np.arange(len(v)), np.maximum(v, 1e-30), color=c, linestyle=ls, linewidth=1, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("t (memory index)")
    ax.set_ylabel("||dL/dm_t|| (mean over batch)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path, dpi)
