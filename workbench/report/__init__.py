"""`rl compare --report FILE.html`: one self-contained HTML file that opens offline.

Contents, answer first: the comparison table (best per column bold, the change against the baseline with its
significance, footer with the rules), the accuracy-vs-length Pareto plot with the frontier marked, held-out accuracy
and length and policy entropy over training (mean over seeds with a 95% interval band), the entropy-performance law
R = -a*exp(H) + b (Cui et al. 2025) fitted per group only where the fit means something (`fit_omission` says why
not otherwise), then the accuracy-vs-cost plot, the other training curves, the runs that were not compared, and a
sample browser of completions per run.

Modules: `figures` (the plots, as SVG data URIs; labels and ranges from workbench.metric_catalog) and `page` (the
HTML: table, sections, sample browser). What callers import is re-exported here.

Safety: every user-controlled string (config values, paths, names, prompts, completions, errors) goes through
html.escape; figures are matplotlib SVGs embedded as base64 data URIs (<img>, so nothing in them runs; text is
drawn as glyph outlines, svg.fonttype=path); there is no
JavaScript at all, and a Content-Security-Policy meta tag forbids scripts and any non-inline resource as a
second line of defence.
"""


from workbench.report.figures import (
    ANSWER_CURVES,
    CURVE_BAND,
    CURVE_TITLES,
    EVAL_FIT_POINTS,
    MIN_FIT_POINTS,
    MIN_FIT_R2,
    clip_to_range,
    curve_figure,
    entropy_law,
    entropy_points,
    eval_series,
    fit_omission,
    learning_curves,
    pareto_plot,
    seed_band,
)
from workbench.report.page import (
    ACCURACY_METRICS,
    COST_METRICS,
    CSP,
    LENGTH_METRICS,
    STYLE,
    esc,
    excluded_html,
    render_report,
    samples_html,
    table_html,
    write_report,
)

__all__ = [
    "ACCURACY_METRICS", "ANSWER_CURVES", "COST_METRICS", "CSP", "CURVE_BAND", "CURVE_TITLES", "EVAL_FIT_POINTS",
    "LENGTH_METRICS", "MIN_FIT_POINTS", "MIN_FIT_R2", "STYLE", "clip_to_range", "curve_figure", "entropy_law",
    "entropy_points", "esc", "eval_series", "excluded_html", "fit_omission", "learning_curves", "pareto_plot",
    "render_report", "samples_html", "seed_band", "table_html", "write_report",
]
