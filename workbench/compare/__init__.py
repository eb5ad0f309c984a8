"""`rl compare`: load run directories, group runs that differ only by seed, and compare metrics across groups.

Reads only run directories (config.yaml, meta.json, summary.json, metrics.jsonl, samples.jsonl, eval/<ckpt>/),
through `workbench.runs.RunDir`; works offline; imports no torch. numpy/scipy come in through workbench.stats;
matplotlib only in workbench.report.

Modules, in the order of the work: `paths` (which run directories the inputs name), `run` (one run and a metric's
value for it), `groups` (seeds of one setting, differing keys, labels, the baseline; the identity itself is
`workbench.grouping`, which W&B uses too), `cells` (means, intervals, significance, best per column), `comparison`
(the whole table and `compare`), `render` (Markdown, CSV, terminal), `display` (how values are written); the HTML
report is `workbench.report`. What callers import is re-exported here.

Rules (also printed in the table footer and the HTML report):

Inputs
  Each PATH may be a run directory (a folder holding config.yaml and meta.json), a glob (expanded here when the
  shell did not), a sweep directory holding index.jsonl (its lines' "run_dir" entries are opened: absolute,
  relative to the current directory, or relative to the sweep directory), or any other folder, which is searched
  recursively for run directories. A PATH that yields no run is an error.

Status
  Only completed runs (meta.json status "completed" and summary.json present) are compared. Failed, interrupted,
  still running, dead (meta.json says running but no process holds the run) or incomplete runs, and sweep jobs
  without a run directory, are listed separately.

Groups
  Runs whose resolved configs are equal except for the keys in IGNORED_KEYS (seed, name, runs_dir, logger, hydra,
  TRL's copies of the seed, output/logging dirs, timestamps; workbench.grouping) form one group: the seeds of one
  setting, which is also the run's W&B group.
  `--group-by KEY` (repeatable) instead groups by the listed key prefixes only (`reward` = the whole reward
  subtree). Groups are ordered by first appearance in the inputs; the baseline is the first group unless
  `--baseline KEY=VALUE` names another (VALUE is parsed as YAML; `null` matches a missing key).

Differing keys
  The flattened config keys whose values are not equal across all groups. When a whole subtree is missing
  in some group (e.g. a reward term only some groups use), the subtree is shown as one column with its
  settings inline (`weight=0.5`) and "-" where absent.

A metric's value for one run
  1. eval/... metrics: the eval results of the run's final checkpoint (eval/final/metrics.json, else the eval
     with the largest step), if they hold the metric;
  2. else summary.json, if it holds the metric;
  3. else metrics.jsonl: for eval/... keys the last logged value; for train-side keys the mean of the last 10
     rows that log the key (summary.json's own rule).
  A group's cell is the mean over its runs (seeds) with a 95% Student-t interval (workbench.stats.mean_ci). A
  group of one run has no spread over seeds; its cell shows that run's own 95% interval over evaluation problems
  (`<metric>/ci_low`, `/ci_high` in its eval results or summary.json) as [low, high], when the run has one.

Significance
  Each group's per-seed values are compared to the baseline group's with the t-test (default), the exact
  permutation test, or a bootstrap test on the difference of means (which falls back to the exact permutation test
  below 5 seeds on a side). The t-test is paired (scipy's ttest_rel on per-seed differences) when every run on both
  sides has a seed partner: the same seed and the same values of any key that varies within the two groups
  (`groups.pair_runs`); otherwise, a partial pairing included, it is Welch's t-test on every run (`--pairing off`:
  always Welch). The permutation and bootstrap tests are two-sample tests and never pair. The p-values of every
  test of the table (non-baseline groups x metrics) are adjusted as one family, Holm's step-down by default
  (`--correction holm|bonferroni|none`, workbench.stats.CORRECTIONS); "≈" marks an adjusted p >= 0.05 (not
  significant), "?" marks an untestable cell (fewer than two seeds on one side).
  Each tested cell also gets the smallest difference its seeds resolve: two-sided t-test at the family's strictest
  level (alpha/m for Holm and Bonferroni), power 0.8, the observed spread (paired: of the differences); and with
  `--resolve` the seeds per group that would resolve a target difference.
  Best per column: by the metric's better direction in workbench.metric_catalog (the README
  metric table): highest accuracy/pass@k/maj@k/reward, lowest length/cost/KL/time; entropy and other metrics have
  no "better" direction and are not highlighted.
"""


from workbench.compare.cells import (
    ALPHA,
    MARK_NOT_SIGNIFICANT,
    MARK_UNTESTABLE,
    PAIRINGS,
    TESTS,
    Cell,
    cell_for,
    metric_direction,
    significance,
)
from workbench.compare.comparison import LEARNING_CURVE_METRICS, Comparison, compare, default_metrics, first_present
from workbench.compare.display import ABSENT, format_number, format_value, get_nested
from workbench.compare.errors import CompareError
from workbench.compare.groups import (
    Group,
    differing_keys,
    display_columns,
    find_baseline,
    group_runs,
    grouping_flat,
)
from workbench.compare.paths import Missing, is_run_dir, load_runs, resolve_paths
from workbench.compare.run import TAIL_ROWS, Run, load_run
from workbench.grouping import IGNORED_KEYS, config_group_id, flatten, seed_free

__all__ = [
    "ABSENT", "ALPHA", "IGNORED_KEYS", "LEARNING_CURVE_METRICS", "MARK_NOT_SIGNIFICANT", "MARK_UNTESTABLE", "PAIRINGS", "TAIL_ROWS",
    "TESTS", "Cell", "CompareError", "Comparison", "Group", "Missing", "Run", "cell_for", "compare", "config_group_id",
    "default_metrics", "differing_keys", "display_columns", "find_baseline", "first_present", "flatten",
    "format_number", "format_value", "get_nested", "group_runs", "grouping_flat", "is_run_dir", "load_run",
    "load_runs", "metric_direction", "resolve_paths", "seed_free", "significance",
]
