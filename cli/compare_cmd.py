"""`rl compare`: wiring only. The work is in workbench.compare (tables, statistics) and workbench.report (HTML).

Module level imports typer only: `rl --help` must not import numpy-heavy, scipy, matplotlib or torch code.
"""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import fail


#: Console width when stdout is not a terminal: wide enough that no table column wraps; a table takes only the width
#: its columns need, so this is a ceiling, not padding.
WIDE = 1000


class OutputFormat(str, Enum):
    """What `rl compare` prints on stdout."""

    table = "table"  # rich tables
    md = "md"  # Markdown
    csv = "csv"


#: The choices of --correction and --pairing as the help lists them; they are workbench.stats.CORRECTIONS and
#: workbench.compare.PAIRINGS (not imported here: scipy; tests/test_compare_stats.py checks they agree).
CORRECTION_CHOICES = "holm, bonferroni, none"
PAIRING_CHOICES = "auto, off"


class SignificanceTest(str, Enum):
    """The test of each group against the baseline (workbench.stats)."""

    welch = "welch"
    permutation = "permutation"
    bootstrap = "bootstrap"


def compare_command(
    paths: Annotated[
        list[str],
        typer.Argument(help="Run directories, globs, sweep directories (with index.jsonl) or folders to search."),
    ],
    group_by: Annotated[
        Optional[list[str]],
        typer.Option("--group-by", "-g", help="Group by these config key prefixes only (repeatable), e.g. reward."),
    ] = None,
    metric: Annotated[
        Optional[list[str]],
        typer.Option("--metric", "-m", help="Metric column (repeatable), e.g. eval/pass@1, eval/length/mean."),
    ] = None,
    baseline: Annotated[
        Optional[str],
        typer.Option("--baseline", "-b", help="KEY=VALUE naming the baseline group (default: the first group)."),
    ] = None,
    report: Annotated[
        Optional[Path],
        typer.Option("--report", "-r", help="Also write a self-contained HTML report (plots, samples) to this file."),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output on stdout: table (rich), md (Markdown) or csv.")
    ] = OutputFormat.table,
    significance: Annotated[
        SignificanceTest, typer.Option("--test", help="Significance test against the baseline: welch (the t-test: paired where a "
                                                "group shares its seeds with the baseline, see --pairing; else Welch), "
                                                "permutation (exact) or bootstrap (the exact permutation test below 5 "
                                                "seeds a side); the last two never pair.")
    ] = SignificanceTest.welch,
    correction: Annotated[
        str, typer.Option("--correction", help="Multiple-comparison correction over every test of the table: "
                                             f"{CORRECTION_CHOICES} (the first is the default).")
    ] = "holm",
    pairing: Annotated[
        str, typer.Option("--pairing", help=f"{PAIRING_CHOICES}: auto = the paired t-test when every run of a group "
                                          "has a baseline run with the same seed (--test welch), off = Welch always.")
    ] = "auto",
    resolve: Annotated[
        Optional[list[str]],
        typer.Option("--resolve", help="Say how many seeds per group resolve this difference (power 0.8, the table's "
                                       "alpha): VALUE for every metric or METRIC=VALUE (repeatable), e.g. 0.02 = 2 pt."),
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", help="Completions per run in the report's sample browser.")
    ] = 12,
) -> None:
    """Compare runs across seeds: did shaping cut length or cost without losing accuracy?

    Groups: runs whose configs are equal except seed (and name, runs_dir, logger, output paths) form a group; --group-by KEY groups by the listed key prefixes only (reward = the whole reward subtree). Baseline: the first group, or --baseline KEY=VALUE (VALUE as YAML; null = key absent).

    Per-run value of a metric: eval results of the final checkpoint (eval/... keys), else summary.json, else metrics.jsonl (last value for eval/..., mean of the last 10 rows otherwise). Cells: mean over seeds +- half the 95% t interval; ≈ = not significantly different from the baseline (Welch's t-test, permutation or bootstrap test, p >= 0.05); ? = not testable (fewer than 2 seeds); one seed shows its run's own interval over eval problems as [low, high]. Best per column in bold.

    Statistics: groups whose runs share seeds with the baseline are tested paired (paired t-test), others with Welch's t-test; p-values are corrected over every test of the table (--correction holm by default); the footer gives the smallest difference the seeds resolve (power 0.8) and, with --resolve, the seeds per group a target difference needs.

    Default metrics: eval/pass@1 (else eval/accuracy), eval/length/mean (else length/mean), cost/mean, entropy/mean. Failed and running runs are listed separately, never mixed in.
    """
    fmt, test = output_format.value, significance.value
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        fail(f"--report must name an .html file, got {report}")
    if samples < 0:
        fail("--samples must be >= 0")
    if report is not None:  # before any work: the report's plots are an optional part
        from cli.common import require

        require("matplotlib", "--report (its plots)", "'rl-workbench[report]' (or pip install matplotlib)")

    from workbench.compare import CompareError, compare

    try:
        comp = compare(paths, metrics=metric, group_by=group_by, baseline=baseline, test=test,
                       correction=correction, pairing=pairing, resolve=resolve)
    except CompareError as e:
        fail(" ".join(str(e).split()))

    if fmt == "md":
        typer.echo(comp.to_markdown(), nl=False)
    elif fmt == "csv":
        typer.echo(comp.to_csv(), nl=False)
        for e in comp.excluded:
            typer.echo(f"not compared: {e.path} ({e.status})", err=True)
    else:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # piped into a file or `less`: no 80-column wrapping of the headers
            console = Console(width=max(console.width, WIDE))
        for t in comp.rich_tables():
            console.print(t)

    if report is not None:
        from workbench.report import write_report

        try:
            out = write_report(comp, report, samples_per_run=samples, command=_command_line(
                paths, group_by, metric, baseline, report, fmt, test, samples, correction, pairing, resolve))
        except OSError as e:
            fail(f"cannot write report {report}: {e}")
        typer.echo(f"report: {out}", err=fmt != "table")


def _command_line(paths, group_by, metric, baseline, report, fmt, test, samples, correction, pairing, resolve) -> str:
    """The command as parsed (sys.argv is not the command under a test runner)."""
    parts = ["rl", "compare", *paths]
    for g in group_by or []:
        parts += ["--group-by", g]
    for m in metric or []:
        parts += ["--metric", m]
    if baseline:
        parts += ["--baseline", baseline]
    parts += ["--report", str(report)]
    if fmt != "table":
        parts += ["--format", fmt]
    if test != "welch":
        parts += ["--test", test]
    if samples != 12:
        parts += ["--samples", str(samples)]
    if correction != "holm":
        parts += ["--correction", correction]
    if pairing != "auto":
        parts += ["--pairing", pairing]
    for r in resolve or []:
        parts += ["--resolve", r]
    return shlex.join(parts)
