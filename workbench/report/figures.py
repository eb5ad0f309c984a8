"""The report's figures, as SVG data URIs: training curves with 95% bands over seeds, accuracy-vs-length/cost Pareto
plots with the frontier, and the entropy-performance law R = -a*exp(H) + b (Cui et al. 2025), drawn only where the
fit means something (`fit_omission` says why not otherwise). Axis labels, titles and the range an interval is
drawn within come from `workbench.metric_catalog`.

Figures are matplotlib SVGs (svg.fonttype=path: text as glyph outlines, so nothing in them runs and they look the
same without the fonts), embedded by `workbench.report.page` as <img> data URIs.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from workbench import metric_catalog
from workbench.compare import LEARNING_CURVE_METRICS, Comparison, Run

def _mpl_text(s: str, limit: int = 60) -> str:
    """Matplotlib parses $...$ as math text; show user strings literally (and not too long for a legend)."""
    s = str(s)
    if len(s) > limit:
        s = s[: limit - 3] + "..."
    return s.replace("$", r"\$")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _figure(fig) -> str:
    """A figure as an SVG data URI: sharp at any zoom and in print (a 100 dpi PNG looked soft), and shown at the
    figure's own size. Text as paths, so it looks the same without the fonts."""
    buf = io.BytesIO()
    with _plt().rc_context({"svg.fonttype": "path", "svg.hashsalt": "rl-report"}):  # hashsalt: stable element ids
        fig.savefig(buf, format="svg")
    _plt().close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _colors(n: int) -> list:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _smooth(values: list[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size < 3:
        return v
    w = min(window, v.size)
    kernel = np.ones(w)
    num = np.convolve(v, kernel, mode="full")[: v.size]
    den = np.convolve(np.ones(v.size), kernel, mode="full")[: v.size]
    return num / den  # trailing mean over up to w points


def _window(comp: Comparison) -> int:
    longest = max((len(r.rows()) for r in comp.runs), default=0)
    return max(1, longest // 25)


CURVE_BAND = "95% CI of the mean over seeds (Student t)"
# The panels of "Over training": held-out accuracy and length at the start, every eval.every steps and the end,
# and the policy entropy of every training step.
ANSWER_CURVES = ("eval/accuracy", "eval/length/mean", "entropy/mean")
# Their panel titles: what the quantity is, and its name (the y-axis gives its unit: metric_catalog.axis).
CURVE_TITLES = {m: f"{metric_catalog.title(m)} ({m})" for m in ANSWER_CURVES}


def eval_series(run: Run, metric: str) -> tuple[list[float], list[float]]:
    """(steps, values) of a held-out metric over training: the start evaluation at step 0 (meta.json's eval_start,
    else summary.json's `<metric>_start`), the in-training evaluations (metrics.jsonl, eval.every) and the final
    one at the last step (the value the table shows, which replaces an in-training evaluation of that step)."""
    steps, vals = run.series(metric)
    points = dict(zip(steps, vals))
    start = (run.meta.get("eval_start") or {}).get(metric) if isinstance(run.meta.get("eval_start"), dict) else None
    if start is None:
        start = run.summary.get(f"{metric}_start")
    if isinstance(start, (int, float)) and math.isfinite(start):
        points.setdefault(0.0, float(start))
    last = run.summary.get("steps")
    final = run.value(metric)[0]
    if isinstance(last, (int, float)) and final is not None and math.isfinite(final):
        points[float(last)] = float(final)
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def _series(run: Run, metric: str) -> tuple[list[float], list[float]]:
    return eval_series(run, metric) if metric.startswith("eval/") else run.series(metric)


def seed_band(by_step: dict[float, list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, low, high) over seeds per step: the mean and its 95% Student-t interval (NaN with one seed)."""
    from workbench.stats import mean_ci

    xs = np.array(sorted(by_step))
    stats = np.array([mean_ci(by_step[x]) for x in xs]).reshape(-1, 3)
    return xs, stats[:, 0], stats[:, 1], stats[:, 2]


def curve_figure(comp: Comparison, metrics: list[str], titles: dict[str, str] | None = None) -> tuple[str | None, int]:
    """One panel per metric: per group the mean over seeds (train-side metrics smoothed by a trailing mean) and the
    95% interval of that mean over seeds as a band; a metric needs >= 2 points in some run. Returns (PNG, window)."""
    metrics = [m for m in metrics if any(len(_series(r, m)[0]) >= 2 for r in comp.runs)]
    if not metrics:
        return None, 0
    plt = _plt()
    window = _window(comp)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.4 * nrows + 0.5), squeeze=False)
    colors = _colors(len(comp.groups))
    for ax, m in zip(axes.flat, metrics):
        for g, color in zip(comp.groups, colors):
            by_step: dict[float, list[float]] = {}
            for r in g.runs:
                steps, vals = _series(r, m)
                for s, v in zip(steps, _smooth(vals, 1 if m.startswith("eval/") else window)):
                    by_step.setdefault(s, []).append(float(v))
            if not by_step:
                continue
            xs, mean, lo, hi = seed_band(by_step)
            lo, hi = clip_to_range(m, lo, hi)
            marker = "o" if m.startswith("eval/") else None
            ax.plot(xs, mean, color=color, lw=1.6, marker=marker, ms=3.5, label=_mpl_text(g.title))
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(xs[ok], lo[ok], hi[ok], color=color, alpha=0.15, lw=0)
        ax.set_title((titles or {}).get(m, m), fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(metric_catalog.axis(m), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:  # one legend for all panels, under them
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    rows_of_legend = math.ceil(len(handles) / 4) if handles else 0
    fig.tight_layout(rect=(0, min(0.45, 0.06 * rows_of_legend / nrows + 0.02 * bool(handles)), 1, 1))
    return _figure(fig), window


def learning_curves(comp: Comparison) -> tuple[str | None, int]:
    """The other training-side curves (reward, training accuracy, rollout length, cost), with 95% bands."""
    return curve_figure(comp, [m for m in LEARNING_CURVE_METRICS if m not in ANSWER_CURVES])


def pareto_plot(comp: Comparison, x_metric: str, y_metric: str) -> tuple[str, list[int]]:
    """Group means with 95% intervals (bars) and seeds (faint dots); the non-dominated groups joined and ringed."""
    from workbench.stats import pareto_front

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    colors = _colors(len(comp.groups))
    pts = []
    for g, color in zip(comp.groups, colors):
        cx, cy = comp.cell(g.index, x_metric), comp.cell(g.index, y_metric)
        # seeds: pairs from the same run
        sx, sy = [], []
        for r in g.runs:
            vx, vy = r.value(x_metric)[0], r.value(y_metric)[0]
            if vx is not None and vy is not None:
                sx.append(vx)
                sy.append(vy)
        ax.scatter(sx, sy, color=color, alpha=0.35, s=14, lw=0)
        pts.append((cx.mean, cy.mean))
        if not (math.isfinite(cx.mean) and math.isfinite(cy.mean)):
            continue
        # intervals drawn within the values a metric can take (a t interval over 3 seeds can pass 1.0 or 0)
        xlo, xhi = clip_to_range(x_metric, cx.low, cx.high)
        ylo, yhi = clip_to_range(y_metric, cy.low, cy.high)
        xerr = [[cx.mean - xlo], [xhi - cx.mean]] if math.isfinite(cx.low) else None
        yerr = [[cy.mean - ylo], [yhi - cy.mean]] if math.isfinite(cy.low) else None
        ax.errorbar([cx.mean], [cy.mean], xerr=xerr, yerr=yerr, fmt="o", color=color, ms=7, capsize=3,
                    label=_mpl_text(g.title))
        ax.annotate(f"#{g.index + 1}", (cx.mean, cy.mean), textcoords="offset points", xytext=(6, 5), fontsize=9)
    front = pareto_front(pts, minimize_x=True, maximize_y=True)
    if front:
        fx = [pts[i][0] for i in front]
        fy = [pts[i][1] for i in front]
        ax.plot(fx, fy, ls="--", color="black", lw=1.2, drawstyle="steps-post" if len(front) > 1 else "default",
                label="Pareto frontier", zorder=1)
        ax.scatter(fx, fy, s=260, facecolors="none", edgecolors="black", lw=1.5, zorder=3)
    ax.set_xlabel(f"{x_metric}  (lower is better)")
    ax.set_ylabel(f"{y_metric}  (higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _figure(fig), front


def entropy_points(run: Run, perf: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, R) pairs over training: entropy/mean smoothed over every logged step (trailing mean over `window`), taken
    at the steps that also log the performance metric (smoothed too, unless it is a held-out eval/... metric)."""
    rows = [r for r in run.rows() if isinstance(r.get("entropy/mean"), (int, float))]
    if not rows:
        return np.zeros(0), np.zeros(0)
    h_all = _smooth([float(r["entropy/mean"]) for r in rows], window)
    pick = [i for i, r in enumerate(rows) if isinstance(r.get(perf), (int, float))]
    if not pick:
        return np.zeros(0), np.zeros(0)
    h = h_all[pick]
    y = _smooth([float(rows[i][perf]) for i in pick], 1 if perf.startswith("eval/") else window)
    keep = np.isfinite(h) & np.isfinite(y)
    return h[keep], y[keep]


# When the entropy-law fit is shown (fit_omission): enough points, a fit that is defined, performance that rises as
# entropy falls (a > 0, the law's premise), a predicted ceiling inside the metric's range, and an R^2 that says the
# curve explains a fair share of the variation.
MIN_FIT_POINTS = 10
MIN_FIT_R2 = 0.2
EVAL_FIT_POINTS = 5


def clip_to_range(metric: str, low: Any, high: Any) -> tuple[Any, Any]:
    """An interval's ends (floats or arrays) clipped to the values the metric can take (`metric_catalog.bounds`:
    [0, 1] for rates and shares, [0, inf) for lengths, entropies, costs), for drawing; NaN stays NaN."""
    lo_lim, hi_lim = metric_catalog.bounds(metric)
    return np.clip(low, lo_lim, hi_lim), np.clip(high, lo_lim, hi_lim)


def fit_omission(fit: dict[str, float], perf: str) -> str | None:
    """None when an entropy-law fit is meaningful enough to show, else the reason it is omitted (a sentence end).

    >>> fit_omission({"a": 0.1, "b": 0.9, "ceiling": 0.8, "r2": 0.7, "n": 12}, "eval/accuracy") is None
    True
    >>> fit_omission({"a": 0.1, "b": 1.4, "ceiling": 1.3, "r2": 0.7, "n": 12}, "eval/accuracy")
    'its predicted ceiling b − a = 1.3 lies outside the range of eval/accuracy, [0, 1]'
    """
    n = int(fit.get("n", 0))
    if n < MIN_FIT_POINTS:
        return f"only {n} (entropy, {perf}) points, fewer than {MIN_FIT_POINTS}"
    a, b, ceiling, r2 = (float(fit.get(k, math.nan)) for k in ("a", "b", "ceiling", "r2"))
    if not all(math.isfinite(v) for v in (a, b, ceiling, r2)):
        return "the fit is undefined: entropy or performance did not vary"
    if a <= 0:
        return f"a = {a:.3g} ≤ 0: performance does not rise as entropy falls, which the law assumes"
    low, high = metric_catalog.bounds(perf)
    if not low <= ceiling <= high:
        return f"its predicted ceiling b − a = {ceiling:.3g} lies outside the range of {perf}, [{low:g}, {high:g}]"
    if r2 < MIN_FIT_R2:
        return f"R² = {r2:.2f} < {MIN_FIT_R2:g}: the curve explains little of the variation"
    return None


def entropy_law(comp: Comparison) -> tuple[str | None, list[tuple[str, dict[str, float]]], str,
                                           list[tuple[str, str]]]:
    """Fit R = -a exp(H) + b per group (and pooled) on per-step (entropy, performance) points.

    Returns (PNG, meaningful fits [(name, fit)], performance metric, omitted [(name, reason)]). The plot shows every
    group's points; only the meaningful fits are drawn (with their ceiling) and tabulated.
    """
    from workbench.stats import fit_entropy_law

    # performance: periodic held-out accuracy when every run logged it at >= EVAL_FIT_POINTS steps (a curve, not a
    # few checkpoints), else training accuracy at every step
    perf = "train/accuracy"
    if comp.runs and all(len(r.series("eval/accuracy")[0]) >= EVAL_FIT_POINTS for r in comp.runs):
        perf = "eval/accuracy"
    window = _window(comp)
    fits: list[tuple[str, dict[str, float]]] = []
    omitted: list[tuple[str, str]] = []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    colors = _colors(len(comp.groups))
    all_h, all_r = [], []
    hmax = 0.0
    for g, color in zip(comp.groups, colors):
        hs, rs = [], []
        for r in g.runs:
            h, y = entropy_points(r, perf, window)
            hs.append(h)
            rs.append(y)
        h = np.concatenate(hs) if hs else np.zeros(0)
        y = np.concatenate(rs) if rs else np.zeros(0)
        if h.size == 0:
            continue
        all_h.append(h)
        all_r.append(y)
        hmax = max(hmax, float(h.max()))
        fit = fit_entropy_law(h, y)
        why = fit_omission(fit, perf)
        label = _mpl_text(g.title, 40)
        if why is None:
            fits.append((g.title, fit))
            grid = np.linspace(0.0, float(h.max()) * 1.05, 200)
            ax.plot(grid, -fit["a"] * np.exp(grid) + fit["b"], color=color, lw=1.6)
            ax.scatter([0.0], [fit["ceiling"]], marker="*", s=120, color=color, edgecolors="black", lw=0.6, zorder=4)
            label += f": a={fit['a']:.3g}, b={fit['b']:.3g}, R²={fit['r2']:.2f}"
        else:
            omitted.append((g.title, why))
            label += " (no fit)"
        ax.scatter(h, y, s=12, alpha=0.5, color=color, lw=0, label=label)
    if not all_h:
        plt.close(fig)
        return None, [], perf, []
    if len(all_h) > 1:
        pooled = fit_entropy_law(np.concatenate(all_h), np.concatenate(all_r))
        why = fit_omission(pooled, perf)
        if why is None:
            fits.append(("all groups (pooled)", pooled))
            grid = np.linspace(0.0, hmax * 1.05, 200)
            ax.plot(grid, -pooled["a"] * np.exp(grid) + pooled["b"], color="black", ls="--", lw=1.2,
                    label=f"pooled: ceiling {pooled['ceiling']:.3g}, R²={pooled['r2']:.2f}")
        else:
            omitted.append(("all groups (pooled)", why))
    ax.set_xlabel("policy entropy H (entropy/mean, nats)")
    ax.set_ylabel(f"performance R ({perf})")
    ax.set_title("R = -a·exp(H) + b" + ("; ★ = predicted ceiling b - a at H = 0" if fits else ": no fit shown"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _figure(fig), fits, perf, omitted
