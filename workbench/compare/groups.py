"""Groups of runs for `rl compare`: runs of one setting (`workbench.grouping`, the identity W&B groups by too), or of
equal `--group-by` keys; the config keys that differ between groups, each group's label, and the baseline group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.compare.display import ABSENT, MISSING, format_value, get_nested
from workbench.compare.errors import CompareError
from workbench.compare.run import Run
from workbench.grouping import canonical, key_matches, seed_free, setting_key


@dataclass
class Group:
    index: int
    runs: list[Run]
    config: dict[str, Any]  # nested config of the grouping keys (representative: the first run)
    flat: dict[str, Any]  # flattened grouping keys
    values: dict[str, str] = field(default_factory=dict)  # differing column -> display value
    label: str = ""

    @property
    def title(self) -> str:
        return f"#{self.index + 1} {self.label}".strip()

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(r.name for r in self.runs))


def grouping_flat(run: Run, group_by: Sequence[str] | None) -> dict[str, Any]:
    """The flattened keys a run is grouped by: the `--group-by` prefixes, else its whole setting (`seed_free`)."""
    flat = run.flat_config()
    if group_by:
        return {k: v for k, v in flat.items() if any(key_matches(k, p) for p in group_by)}
    return seed_free(flat)


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in flat.items():
        parts = k.split(".")
        cur = out
        for p in parts[:-1]:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = cur[p] = {}
            cur = nxt
        cur[parts[-1]] = v
    return out


def group_runs(runs: Sequence[Run], group_by: Sequence[str] | None = None) -> list[Group]:
    """Runs with equal grouping keys form a group; groups in order of first appearance."""
    if group_by:
        known = set()
        for r in runs:
            known |= set(r.flat_config())
        for p in group_by:
            if not any(key_matches(k, p) for k in known):
                tops = sorted({k.split(".")[0] for k in known})
                raise CompareError(f"--group-by {p!r} matches no config key; top-level keys: {', '.join(tops)}")
    groups: dict[str, Group] = {}
    for r in runs:
        flat = grouping_flat(r, group_by)
        key = setting_key(flat)
        if key not in groups:
            groups[key] = Group(len(groups), [], _unflatten(flat), flat)
        groups[key].runs.append(r)
    out = list(groups.values())
    _describe(out)
    return out


def differing_keys(flat_configs: Sequence[dict[str, Any]]) -> list[str]:
    """Flattened keys whose value (or presence) is not the same in every config, in first-seen order."""
    keys = list(dict.fromkeys(k for c in flat_configs for k in c))
    return [k for k in keys if len({canonical(c.get(k, "\0missing")) for c in flat_configs}) > 1]


def display_columns(nested: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    """Differing keys for display: a key under a subtree that is absent in some config collapses to that subtree."""
    cols: list[str] = []
    for k in keys:
        parts = k.split(".")
        col = k
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if any(get_nested(c, prefix) is MISSING for c in nested):
                col = prefix
                break
        if col not in cols:
            cols.append(col)
    return cols


def _describe(groups: list[Group]) -> None:
    """Fill each group's differing values and a short label."""
    keys = differing_keys([g.flat for g in groups]) if len(groups) > 1 else []
    cols = display_columns([g.config for g in groups], keys)
    for g in groups:
        g.values = {c: format_value(get_nested(g.config, c)) for c in cols}
    # Label: the run name when every group has one distinct name, else the differing values (the value alone when
    # one key differs).
    names = [g.names for g in groups]
    if all(len(n) == 1 for n in names) and len({n[0] for n in names}) == len(groups):
        for g in groups:
            g.label = g.names[0]
        return
    for g in groups:
        if len(cols) == 1 and g.values[cols[0]] != ABSENT:  # one differing key (e.g. --group-by experiment_name)
            g.label = g.values[cols[0]][:60]
            continue
        parts = [f"{c}={v}" for c, v in g.values.items() if v != ABSENT]
        label = "; ".join(parts) if parts else ", ".join(g.names)
        g.label = label if len(label) <= 60 else label[:57] + "..."


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):  # YAML 1.1 reads 5e-5 as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def find_baseline(groups: Sequence[Group], spec: str | None) -> int:
    """Index of the baseline group: 0, or the one group whose runs have KEY=VALUE (VALUE as YAML; null = absent)."""
    if not spec:
        return 0
    if "=" not in spec:
        raise CompareError(f"--baseline must be KEY=VALUE (e.g. reward.length_kimi.weight=0.5), got {spec!r}")
    key, _, raw = spec.partition("=")
    key, want = key.strip(), _parse_scalar(raw.strip())
    hits = []
    for g in groups:
        for r in g.runs:
            have = get_nested(r.config, key)
            have = None if have is MISSING else have
            if have == want or (have is not None and format_value(have) == str(raw.strip())):
                hits.append(g.index)
                break
    if not hits:
        raise CompareError(f"--baseline {spec}: no group has {key}={raw.strip()}; groups: "
                           + "; ".join(g.title for g in groups))
    if len(hits) > 1:
        raise CompareError(f"--baseline {spec} matches {len(hits)} groups ("
                           + "; ".join(groups[i].title for i in hits) + "); use a more specific KEY=VALUE")
    return hits[0]


def within_keys(runs: Sequence[Run]) -> set[str]:
    """The seed-free config keys whose values differ between these runs (a `--group-by` group pools settings)."""
    flats = [seed_free(r.flat_config()) for r in runs]
    keys = {k for f in flats for k in f}
    return {k for k in keys if len({canonical(f.get(k, "\0missing")) for f in flats}) > 1}


def partner_keys(runs: Sequence[Run], base: Sequence[Run]) -> tuple[list[str | None], list[str | None]]:
    """Each run's partner key on both sides: its seed and its values of every key that varies within either side
    (the keys a `--group-by` group pools); None for a run without a seed. Equal keys = seed partners."""
    keys = sorted(within_keys(runs) | within_keys(base))

    def key(r: Run) -> str | None:
        if r.seed is None:
            return None
        flat = r.flat_config()
        return canonical([r.seed, [flat.get(k, "\0missing") for k in keys]])

    return [key(r) for r in runs], [key(r) for r in base]


def pair_runs(runs: Sequence[Run], base: Sequence[Run]) -> list[tuple[int, int]] | None:
    """Seed partners (`partner_keys`) between a group's runs and the baseline's, as (i, j) index pairs. Only a
    complete one-to-one pairing counts: None when a run lacks a seed, two runs of a side share a partner key, or some
    run on either side has no partner (a partial pairing is tested unpaired, with every run)."""
    ka, kb = partner_keys(runs, base)
    if None in ka or None in kb or len(set(ka)) != len(ka) or len(set(kb)) != len(kb) or set(ka) != set(kb):
        return None
    where = {k: j for j, k in enumerate(kb)}
    return [(i, where[k]) for i, k in enumerate(ka)]


def partner_count(runs: Sequence[Run], base: Sequence[Run]) -> int:
    """How many of `runs` have a seed partner in `base`, to say how partial a pairing is."""
    ka, kb = partner_keys(runs, base)
    have = {k for k in kb if k is not None}
    return sum(1 for k in ka if k is not None and k in have)
