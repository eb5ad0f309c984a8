"""The report page: the comparison table, the figures in the order of the questions they answer, the runs that were
not compared and a browser of sample completions, as one self-contained HTML file.

Safety: every user-controlled string (config values, paths, names, prompts, completions, errors) goes through
html.escape; figures are <img> data URIs; there is no JavaScript at all, and a Content-Security-Policy meta tag
forbids scripts and any non-inline resource as a second line of defence.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from pathlib import Path
from typing import Any

from workbench.compare import (
    MARK_NOT_SIGNIFICANT,
    MARK_UNTESTABLE,
    Comparison,
    first_present,
    format_number,
    format_value,
)
from workbench.report.figures import (
    ANSWER_CURVES,
    CURVE_BAND,
    CURVE_TITLES,
    MIN_FIT_POINTS,
    MIN_FIT_R2,
    curve_figure,
    entropy_law,
    learning_curves,
    pareto_plot,
)

ACCURACY_METRICS = ("eval/pass@1", "eval/accuracy", "train/accuracy")
LENGTH_METRICS = ("eval/length/mean", "length/mean")
# Cost axis: cost of pass ($ per correct answer, the papers' measure; includes tool calls) when runs have it.
COST_METRICS = ("eval/cost_of_pass", "eval/cost/mean", "cost/mean")
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(uri: str, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{esc(alt)}">'


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
                tip += (f"; {'paired over ' + str(c.pairs) + ' seeds' if c.pairs else 'unpaired'}; raw p={c.p:.3g} "
                        f"vs baseline")
                if comp.correction != "none":
                    tip += f"; {comp.correction}-adjusted p={c.p_adj:.3g}"
                if math.isfinite(c.mde):
                    tip += f"; smallest resolvable difference {comp.difference_text(m, c.mde)}"
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
                    "and maj@k, else also in % of the baseline's mean; p = the test's two-sided p-value"
                    + (f" (p_adj: after the {comp.correction} correction; the raw p is in each cell's tooltip)."
                       if comp.correction != "none" else "."))
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
