"""`rl compare`'s text renderers: Markdown (for a paper or PR), CSV (every number at full precision) and the
terminal's rich tables, each of a `workbench.compare.Comparison` (`comp`; its methods to_markdown, to_csv and
rich_tables call these). The HTML report is `workbench.report`."""

from __future__ import annotations

import csv
import io
import math
from typing import Any


def markdown(comp: Any) -> str:
    def esc(s: str) -> str:  # table pipes, and no raw HTML when pasted into a PR or paper
        s = s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    head = comp.header()
    lines = ["| " + " | ".join(esc(h) for h in head) + " |",
             "|" + "|".join("---:" if i >= len(head) - len(comp.metrics) - 1 else "---" for i in range(len(head))) + "|"]
    for gi in range(len(comp.groups)):
        cells = [esc(t) for t in comp.row_texts(gi)]
        for j, m in enumerate(comp.metrics):
            k = len(head) - len(comp.metrics) + j
            if comp.cells[(gi, m)].best:
                c = comp.cells[(gi, m)]
                cells[k] = f"**{esc(c.text())}**" + (f" {c.marker}" if c.marker else "")
            delta = comp.delta_text(gi, m)
            if delta:
                cells[k] += f" ({esc(delta)})"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [esc(f) for f in comp.footer()]
    if len(comp.groups) > 1:
        lines.append("Δ = the group's mean minus the baseline's: in points (of 100) for accuracy, pass@k and maj@k, "
                     "else also in % of the baseline's mean; p = the test's two-sided p-value on per-seed values"
                     + (f" (p_adj: after the {comp.correction} correction)." if comp.correction != "none" else "."))
    if comp.excluded:
        lines.append("")
        lines.append("Not compared (not completed):")
        for e in comp.excluded:
            err = f" ({esc(' '.join(str(e.error).split())[:200])})" if e.error else ""
            lines.append(f"- {esc(str(e.path))}: {esc(e.status)}{err}")
    return "\n".join(lines) + "\n"


def _csv_num(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def csv_text(comp: Any) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["group", "label", "baseline", "runs", "seeds", *comp.columns, "n"]
    for m in comp.metrics:
        head += [m, f"{m}/ci_low", f"{m}/ci_high", f"{m}/ci_over", f"{m}/n", f"{m}/p_value", f"{m}/p_adjusted",
                 f"{m}/paired_seeds", f"{m}/min_detectable_diff"]
        if m in comp.resolve:
            head.append(f"{m}/seeds_to_resolve")
    w.writerow(head)
    for gi, g in enumerate(comp.groups):
        row: list[Any] = [gi + 1, g.label, gi == comp.baseline, ";".join(str(r.path) for r in g.runs),
                          ";".join(str(s) for s in g.seeds), *(g.values[c] for c in comp.columns), len(g.runs)]
        for m in comp.metrics:
            c = comp.cells[(gi, m)]
            row += [_csv_num(c.mean), _csv_num(c.low), _csv_num(c.high),
                    c.over if math.isfinite(c.low) else "", c.n, _csv_num(c.p), _csv_num(c.p_adj),
                    c.pairs or "", _csv_num(c.mde)]
            if m in comp.resolve:
                row.append("" if c.seeds_needed is None else c.seeds_needed)
        w.writerow(row)
    return buf.getvalue()


def rich_tables(comp: Any) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"rl compare: {len(comp.groups)} group(s), {len(comp.runs)} run(s)", show_lines=False)
    for j, h in enumerate(comp.header()):
        right = j >= len(comp.header()) - len(comp.metrics) - 1
        t.add_column(Text(h), justify="right" if right else "left", overflow="fold")
    for gi in range(len(comp.groups)):
        texts = comp.row_texts(gi)
        cells = [Text(x) for x in texts[: len(texts) - len(comp.metrics)]]
        for m in comp.metrics:
            c = comp.cells[(gi, m)]
            txt = Text(c.text(), style="bold green" if c.best else "")
            if c.marker:
                txt.append(f" {c.marker}", style="yellow")
            cells.append(txt)
        t.add_row(*cells, style="cyan" if gi == comp.baseline else None)
    t.caption = Text("\n".join(comp.footer()), justify="left")
    out = [t]
    if comp.excluded:
        x = Table(title="not compared (not completed)")
        x.add_column("run directory", overflow="fold")
        x.add_column("status")
        x.add_column("error", overflow="fold")
        for e in comp.excluded:
            x.add_row(Text(str(e.path)), Text(e.status), Text(" ".join(str(e.error or "").split())[:200]))
        out.append(x)
    return out
