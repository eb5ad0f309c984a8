"""`rl compare --report FILE.html`: one self-contained HTML file that opens offline.

Contents, answer first: the comparison table (best per column bold, the change against the baseline with its
significance, footer with the rules), the accuracy-vs-length Pareto plot with the frontier marked, held-out accuracy
and length and policy entropy over training (mean over seeds with a 95% interval band), the entropy-performance law
R = -a*exp(H) + b (Cui et al. 2025) fitted per group only where the fit means something (`fit_omission` says why
not otherwise), then the accuracy-vs-cost plot, the other training curves, the runs that were not compared, and a
sample browser of completions per run.

Safety: every user-controlled string (config values, paths, names, prompts, completions, errors) goes through
html.escape; figures are matplotlib SVGs embedded as base64 data URIs (<img>, so nothing in them runs; text is
drawn as glyph outlines, svg.fonttype=path); there is no
JavaScript at all, and a Content-Security-Policy meta tag forbids scripts and any non-inline resource as a
second line of defence.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from workbench.compare import (
    LEARNING_CURVE_METRICS,
    MARK_NOT_SIGNIFICANT,
    MARK_UNTESTABLE,
    Comparison,
    Run,
    first_present,
    format_number,
    format_value,
)

ACCURACY_METRICS = ("eval/pass@1", "eval/accuracy", "train/accuracy")
LENGTH_METRICS = ("eval/length/mean", "length/mean")
# Cost axis: cost of pass ($ per correct answer, the papers' measure; includes tool calls) when runs have it.
COST_METRICS = ("eval/cost_of_pass", "eval/cost/mean", "cost/mean")
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


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


def _img(uri: str, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{esc(alt)}">'


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


# ----------------------------------------------------------------------------------------------- figures


CURVE_BAND = "95% CI of the mean over seeds (Student t)"
# The panels of "Over training": held-out accuracy and length at the start, every eval.every steps and the end,
# and the policy entropy of every training step.
ANSWER_CURVES = ("eval/accuracy", "eval/length/mean", "entropy/mean")
# The y-axis of each curve: the quantity and its unit.
Y_LABELS = {
    "eval/accuracy": "accuracy (fraction correct)",
    "train/accuracy": "accuracy (fraction correct)",
    "eval/length/mean": "tokens per completion",
    "length/mean": "tokens per completion",
    "entropy/mean": "entropy (nats per token)",
    "train/reward": "reward (weighted sum)",
    "cost/mean": "$ per rollout",
}
CURVE_TITLES = {
    "eval/accuracy": "held-out accuracy (eval/accuracy)",
    "eval/length/mean": "held-out length, tokens (eval/length/mean)",
    "entropy/mean": "policy entropy, nats (entropy/mean)",
}


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
        ax.set_ylabel(Y_LABELS.get(m, m), fontsize=9)
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


def metric_range(metric: str) -> tuple[float, float]:
    """The range a metric's values can take: [0, 1] for accuracy-like metrics, [0, inf) for entropy, length and
    cost, unbounded otherwise."""
    n = metric.lower()
    if any(s in n for s in ("accuracy", "pass@", "maj@")):
        return 0.0, 1.0
    if any(s in n for s in ("entropy", "length", "cost")):
        return 0.0, math.inf
    return -math.inf, math.inf


def clip_to_range(metric: str, low: Any, high: Any) -> tuple[Any, Any]:
    """An interval's ends (floats or arrays) clipped to `metric_range(metric)`, for drawing; NaN stays NaN."""
    lo_lim, hi_lim = metric_range(metric)
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
    low, high = metric_range(perf)
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


# ----------------------------------------------------------------------------------------------- html pieces


def table_html(comp: Comparison) -> str:
    head = comp.header()
    n_meta = len(head) - len(comp.metrics)
    out = ['<table class="cmp summary"><thead><tr>']
    out += [f'<th class="{"num" if j >= n_meta - 1 else ""}">{esc(h)}</th>' for j, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for gi, g in enumerate(comp.groups):
        cls = ' class="baseline"' if gi == comp.baseline else ""
        out.append(f"<tr{cls}>")
        texts = comp.row_texts(gi)
        for t in texts[:n_meta]:
            out.append(f"<td>{esc(t)}</td>")
        for m in comp.metrics:
            c = comp.cells[(gi, m)]
            body = esc(c.text())
            if c.best:
                body = f"<b>{body}</b>"
            tip = f"n={c.n}; seeds: {', '.join(format_number(v) for v in c.values)}"
            if math.isfinite(c.p):
                tip += f"; p={c.p:.3g} vs baseline"
            if c.marker:
                body += f' <span class="mark">{esc(c.marker)}</span>'
            delta = comp.delta_text(gi, m)
            if delta:
                body += f'<br><span class="delta">{esc(delta)}</span>'
            out.append(f'<td class="num" title="{esc(tip)}">{body}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    foot = comp.footer()
    if len(comp.groups) > 1:
        foot.append("Δ (second line) = the group's mean minus the baseline's: in points (of 100) for accuracy, pass@k "
                    "and maj@k, else also in % of the baseline's mean; p = the test's two-sided p-value.")
    out.append('<div class="footer">' + "".join(f"<p>{esc(f)}</p>" for f in foot) + "</div>")
    return "".join(out)


def excluded_html(comp: Comparison) -> str:
    if not comp.excluded:
        return "<p>All runs found were completed.</p>"
    rows = "".join(
        f"<tr><td><code>{esc(e.path)}</code></td><td>{esc(e.status)}</td>"
        f"<td>{esc(' '.join(str(e.error or '').split())[:500])}</td></tr>"
        for e in comp.excluded
    )
    return ('<table class="cmp"><thead><tr><th>run directory</th><th>status</th><th>error</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _sample_html(s: dict[str, Any]) -> str:
    correct = s.get("correct")
    mark = "✓" if correct is True else ("✗" if correct is False else "·")
    bits = []
    for k in ("step", "length", "reward", "advantage"):
        v = s.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            bits.append(f"{k} {format_number(float(v)) if isinstance(v, float) else v}")
    prompt = s.get("prompt")
    if not isinstance(prompt, str):
        prompt = json.dumps(prompt, ensure_ascii=False, default=str)
    head = f"{mark} {' · '.join(bits)} · {prompt[:60]}"
    parts = [f'<details class="sample"><summary>{esc(head)}</summary>']
    parts.append(f'<div class="lbl">prompt</div><pre>{esc(prompt)}</pre>')
    completion = s.get("completion", s.get("response", s.get("output", "")))
    if not isinstance(completion, str):
        completion = json.dumps(completion, ensure_ascii=False, default=str)
    parts.append(f'<div class="lbl">completion</div><pre>{esc(completion)}</pre>')
    extra = {k: v for k, v in s.items() if k not in ("prompt", "completion", "response", "output")}
    if extra:
        line = " · ".join(f"{k}: {format_value(v)}" for k, v in extra.items())
        parts.append(f'<div class="lbl">fields</div><div class="fields">{esc(line)}</div>')
    parts.append("</details>")
    return "".join(parts)


def _pick_samples(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Samples of the first and the last sampled step (half each), so the change over training is visible."""
    if len(rows) <= limit:
        return rows
    steps = sorted({r.get("step", 0) for r in rows if isinstance(r.get("step", 0), (int, float))})
    if len(steps) < 2:
        return rows[:limit]
    first = [r for r in rows if r.get("step") == steps[0]][: limit // 2]
    last = [r for r in rows if r.get("step") == steps[-1]][: limit - len(first)]
    return first + last


def samples_html(comp: Comparison, per_run: int) -> str:
    out = []
    for g in comp.groups:
        out.append(f'<details class="group" open><summary>{esc(g.title)} — {len(g.runs)} run(s)</summary>')
        for r in g.runs:
            train = r.samples()
            evals = r.eval_samples()
            shown_t = _pick_samples(train, per_run)
            shown_e = evals[:per_run]
            out.append(
                f'<details class="run"><summary>{esc(r.name)} · seed {esc(r.seed)} · <code>{esc(r.path)}</code> · '
                f"{len(shown_t)}/{len(train)} training samples, {len(shown_e)}/{len(evals)} eval samples</summary>"
            )
            if shown_t:
                out.append("<h4>training rollouts (samples.jsonl: first and last sampled step)</h4>")
                out += [_sample_html(s) for s in shown_t]
            if shown_e:
                out.append(f"<h4>eval samples (eval/{esc(r.eval_checkpoint)}/samples.jsonl)</h4>")
                out += [_sample_html(s) for s in shown_e]
            if not shown_t and not shown_e:
                out.append("<p>No samples recorded.</p>")
            out.append("</details>")
        out.append("</details>")
    return "".join(out)


def _fit_table(fits: list[tuple[str, dict[str, float]]]) -> str:
    rows = "".join(
        f"<tr><td>{esc(name)}</td>" + "".join(f'<td class="num">{esc(format_number(f[k]))}</td>' for k in ("a", "b", "ceiling", "r2"))
        + f'<td class="num">{f["n"]}</td></tr>'
        for name, f in fits
    )
    return ('<table class="cmp"><thead><tr><th>group</th><th class="num">a</th><th class="num">b</th>'
            '<th class="num">ceiling b−a</th><th class="num">R²</th><th class="num">points</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1b1f24;background:#fff;max-width:1500px}
h1{font-size:1.5em;margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:.9em}
table.cmp{border-collapse:collapse;margin:8px 0;font-size:.92em}
table.cmp th,table.cmp td{border:1px solid #ccd;padding:4px 9px;vertical-align:top;text-align:left}
table.cmp td{max-width:26em;overflow-wrap:anywhere}
table.cmp th{background:#eef1f6} table.summary td:first-child{white-space:nowrap} .num{text-align:right !important;white-space:nowrap}
tr.baseline td{background:#f3f8ff} .mark{color:#b36b00;font-weight:bold}
.footer p{margin:2px 0;color:#444;font-size:.85em}
img.plot{max-width:100%;border:1px solid #eee;margin:6px 0}
.row{display:flex;flex-wrap:wrap;gap:16px}
details{margin:3px 0 3px 12px} summary{cursor:pointer}
details.group>summary{font-weight:bold;font-size:1.05em}
pre{background:#f6f8fa;padding:6px 8px;white-space:pre-wrap;word-break:break-word;margin:2px 0 6px 0}
.fields{font-size:.82em;color:#444;font-family:ui-monospace,monospace;margin:0 0 8px 0;overflow-wrap:anywhere} .lbl{font-size:.8em;color:#666} code{font-size:.9em}
.note{color:#555;font-size:.9em} .delta{color:#555;font-size:.85em}
"""


def render_report(comp: Comparison, samples_per_run: int = 12, command: str | None = None) -> str:
    """The HTML text of the report."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
        f"<title>rl compare report ({len(comp.groups)} groups)</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>rl compare</h1>",
        f'<p class="meta">{esc(dt.datetime.now().astimezone().isoformat(timespec="seconds"))} · '
        f"{len(comp.runs)} completed run(s) in {len(comp.groups)} group(s) · {len(comp.excluded)} not compared · "
        + (f"grouped by {esc(', '.join(comp.group_by))}" if comp.group_by else "grouped by config (seeds pooled)")
        + "</p>",
    ]
    if command:
        parts.append(f'<p class="meta">command: <code>{esc(command)}</code></p>')
    parts.append("<h2>Summary table</h2>")
    parts.append(table_html(comp))

    acc = first_present(comp, [m for m in comp.metrics if m in ACCURACY_METRICS] + list(ACCURACY_METRICS))
    pareto = {}
    for xs in (LENGTH_METRICS, COST_METRICS):
        # the table's own metric first, except that cost of pass wins whenever runs have it
        lead = [COST_METRICS[0]] if xs is COST_METRICS else []
        xm = first_present(comp, lead + [m for m in comp.metrics if m in xs] + list(xs))
        if acc and xm:
            uri, front = pareto_plot(comp, xm, acc)
            names = ", ".join(f"#{i + 1}" for i in front) or "none"
            pareto[xs] = (f"<div>{_img(uri, f'{acc} vs {xm}')}<p class='note'>{esc(acc)} vs {esc(xm)}: frontier "
                          f"(non-dominated group means) = {esc(names)}.</p></div>")
    pareto_note = ('<p class="note">Points: group means with 95% intervals over seeds (Student t; drawn within the '
                   "metric's range) on both axes; faint dots: single seeds; dashed line and rings: the Pareto "
                   "frontier (no other group is both shorter/cheaper and more accurate).</p>")

    def pareto_section(what: str, xs: Any) -> None:
        parts.append(f"<h2>Accuracy vs {what} (Pareto)</h2>")
        parts.extend([pareto_note, pareto[xs]] if xs in pareto else
                     [f"<p>Needs an accuracy metric and a {what} metric.</p>"])

    pareto_section("length", LENGTH_METRICS)

    parts.append("<h2>Over training: held-out accuracy, held-out length, entropy</h2>")
    uri, window = curve_figure(comp, list(ANSWER_CURVES), CURVE_TITLES)
    curves_drawn = uri is not None
    if uri:
        parts.append(f'<p class="note">Line: mean over seeds; band: {esc(CURVE_BAND)} (drawn within the metric\'s '
                     "range), none with one seed. Held-out points: the evaluation before training (step 0), every "
                     "eval.every steps, and the final one (the table's value). Entropy: every training step, "
                     f"trailing mean over {window} step(s).</p>")
        parts.append(_img(uri, "held-out accuracy, held-out length and entropy over training"))
    else:
        parts.append("<p>No curves: the runs logged no held-out evaluations during training (eval.every) and no "
                     "entropy.</p>")

    parts.append("<h2>Entropy vs performance</h2>")
    uri, fits, perf, omitted = entropy_law(comp)
    if uri:
        parts.append(
            f'<p class="note">Points: entropy/mean and {esc(perf)} at the same training steps, all seeds; curves: the '
            "fit of R = −a·exp(H) + b (Cui et al. 2025, “The Entropy Mechanism of Reinforcement Learning for "
            "Reasoning Language Models”), drawn only where it is meaningful: at least "
            f"{MIN_FIT_POINTS} points, a > 0, a predicted ceiling b − a (performance once entropy is exhausted, "
            f"H = 0) inside the metric's range, and R² ≥ {MIN_FIT_R2:g}.</p>"
        )
        parts.append(_img(uri, "entropy law fit"))
        if fits:
            parts.append(_fit_table(fits))
        if omitted:
            parts.append('<p class="note">' + " ".join(
                f"Fit omitted for {esc(name)}: {esc(why)}." for name, why in omitted) + "</p>")
    else:
        parts.append(f"<p>No metrics.jsonl rows with both entropy/mean and {esc(perf)}.</p>")

    pareto_section("cost", COST_METRICS)

    parts.append("<h2>Other training curves</h2>")
    uri, window = learning_curves(comp)
    if uri:
        parts.append(f'<p class="note">Line: mean over seeds; band: {esc(CURVE_BAND)}; trailing means over {window} '
                     "logged step(s).</p>")
        parts.append(_img(uri, "learning curves"))
    elif not curves_drawn:
        parts.append("<p>No metrics.jsonl rows to plot.</p>")
    else:
        parts.append("<p>No other training metrics logged.</p>")

    parts.append("<h2>Runs not compared</h2>")
    parts.append(excluded_html(comp))

    parts.append("<h2>Samples</h2>")
    parts.append(f'<p class="note">Up to {samples_per_run} training rollouts per run (first and last sampled step) '
                 "and eval samples of the final checkpoint. Click to expand.</p>")
    parts.append(samples_html(comp, samples_per_run))
    parts.append(
        f'<p class="meta">Markers: {esc(MARK_NOT_SIGNIFICANT)} not significant vs baseline, {esc(MARK_UNTESTABLE)} not '
        "testable. Generated by rl compare; self-contained (no scripts, no external resources).</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(comp: Comparison, path: str | Path, samples_per_run: int = 12, command: str | None = None) -> Path:
    from workbench.runs import atomic_write_text

    p = Path(path)
    atomic_write_text(p, render_report(comp, samples_per_run, command))
    return p
