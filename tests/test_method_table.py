"""The README's method table (section "Method status") against METHODS.md and the registries: every card of
`../shared/METHODS.md` has its row, in order; every config name a built row gives composes and selects what it says
(a registered term or sampler of its group, a conf file, or a TRL option taking the value); every registered term
and sampler is named in a built row. METHODS.md lives beside the project, not in it, so the card check skips where
it is absent (a clone of the project alone, as in CI)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
METHODS = ROOT.parent / "shared" / "METHODS.md"
CONF = ROOT / "conf"

HEADER = "|card|method|paper|status|"
STATUSES = ("built", "partly built", "in progress", "not built")
BUILT = ("built", "partly built")  # the statuses whose config names must exist
NO_CARD = "–"
CARD_HEADING = re.compile(r"^## (\d+[a-z]?|G2-\d+)\. ", re.MULTILINE)
# A config name in a status cell: a backticked `key=value` (`reward=[a,b]`, `experiment=x`, `algo.beta=0.04`).
CONFIG_NAME = re.compile(r"`([A-Za-z_][\w.]*=[^`\s]+)`")


@dataclass(frozen=True)
class Row:
    card: str
    method: str
    paper: str
    status: str  # one of STATUSES
    text: str  # the status cell after its status word
    names: tuple[str, ...]  # the backticked config names of the status cell


def parse_table(section: str) -> list[Row]:
    """The rows of the first table in `section`; a one-line ValueError for a malformed row."""
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    if not lines or lines[0].replace(" ", "") != HEADER:
        raise ValueError(f"the method table must open with {HEADER!r}, got {lines[:1]}")
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip().strip("|").split(" | ")]
        if len(cells) != 4 or not all(cells):
            raise ValueError(f"a row needs 4 non-empty cells (card | method | paper | status): {ln}")
        card, method, paper, status_cell = cells
        m = re.fullmatch(r"\*\*([a-z ]+)\*\*:? ?(.*)", status_cell)
        if not m or m.group(1) not in STATUSES:
            raise ValueError(f"card {card}: the status must open with one of {', '.join(STATUSES)} in bold: "
                             f"{status_cell[:60]}")
        status, text = m.groups()
        rows.append(Row(card, method, paper, status, text, tuple(CONFIG_NAME.findall(text))))
    return rows


def readme_section() -> str:
    text = README.read_text()
    assert "\n### Method status\n" in text, "README.md has no '### Method status' section"
    section = text.split("\n### Method status\n", 1)[1]
    return re.split(r"\n#{1,3} ", section, maxsplit=1)[0]


def method_rows() -> list[Row]:
    return parse_table(readme_section())


def card_ids(methods_text: str) -> list[str]:
    """The card numbers of METHODS.md's card headings (`## 5a. ...`, `## G2-7. ...`), in order."""
    return CARD_HEADING.findall(methods_text)


def test_parser_reads_rows_and_rejects_malformed_ones():
    ok = ("| card | method | paper | status |\n|---|---|---|---|\n"
          "| 2 | DRPO | arXiv 2510.04474 | **built**: `regularizer=[drpo]`, `experiment=lite_ppo`; not `x` |\n"
          "| G2-15 | PURE | arXiv 2504.15275 | **not built**: needs a process reward model |\n")
    drpo, pure = parse_table(ok)
    assert (drpo.card, drpo.status, drpo.names) == ("2", "built", ("regularizer=[drpo]", "experiment=lite_ppo"))
    assert (pure.status, pure.names, pure.text) == ("not built", (), "needs a process reward model")
    head = "| card | method | paper | status |\n|---|---|---|---|\n"
    for bad in ("| 1 | PEAR | arXiv | built: `reward=[pear]` |",  # status word not in bold
                "| 1 | PEAR | arXiv | **done**: `reward=[pear]` |",  # unknown status word
                "| 1 | PEAR | **built**: `reward=[pear]` |"):  # a cell missing
        with pytest.raises(ValueError):
            parse_table(head + bad + "\n")
    with pytest.raises(ValueError, match="must open with"):
        parse_table("| kind | name |\n|---|---|\n")


def test_card_headings_are_read_from_the_methods_format():
    text = "# GROUP 1\n## 1. PEAR: x\n## 5a. Cosine\n### 5b. not a card\n## G2-7. Knapsack\n## Name clashes\n"
    assert card_ids(text) == ["1", "5a", "G2-7"]


def test_every_card_of_methods_md_has_one_row_in_order():
    if not METHODS.is_file():
        pytest.skip(f"{METHODS} is absent: METHODS.md sits beside the project (../shared/), not in a clone of it")
    cards = card_ids(METHODS.read_text())
    assert len(cards) > 30, f"only {len(cards)} card headings read from {METHODS}: has the heading format changed?"
    rows = [r.card for r in method_rows() if r.card != NO_CARD]
    missing = [c for c in cards if c not in rows]
    unknown = [c for c in rows if c not in cards]
    assert not missing, f"cards of METHODS.md without a row in the README's method table: {missing}"
    assert not unknown, f"rows for cards METHODS.md does not have: {unknown}"
    assert rows == cards, "the method table must list the cards once each, in METHODS.md's order"


def test_rows_say_what_selects_them_or_why_not():
    for row in method_rows():
        if row.status in BUILT:
            assert row.names, f"card {row.card} ({row.method}) is {row.status} but names no config"
        else:
            assert len(row.text) >= 10, f"card {row.card} ({row.method}) is {row.status}: say what and why"
        if row.card == NO_CARD:
            assert row.status == "built" and row.paper == NO_CARD, f"a row without a card is a built term: {row}"


def listed(value: str) -> list[str]:
    """The names of a group override's value: `[a,b]` or `a`."""
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return [v.strip() for v in value.split(",")]


def term_groups() -> dict[str, dict[str, type]]:
    """Every config group whose entries are registered classes, by group: the shaping kinds (reward, advantage,
    regularizer) and the samplers."""
    from workbench.sampling import SAMPLERS
    from workbench.shaping.base import REGISTRY

    return {**REGISTRY, "sampler": SAMPLERS}


def built_names(group: str, section: dict) -> list[str]:
    """The names of what the composed config's `group` section builds, in order."""
    from workbench.sampling import build_samplers
    from workbench.shaping import build_terms

    objects = build_samplers(section) if group == "sampler" else build_terms(group, section)
    return [o.name for o in objects]


def named_terms(rows: list[Row]) -> set[tuple[str, str]]:
    """(group, name) of every term or sampler the rows' `<group>=[a,b]` / `<group>=a` config names select."""
    groups = term_groups()
    out = set()
    for row in rows:
        for name in row.names:
            key, value = name.split("=", 1)
            if key in groups:
                out |= {(key, v) for v in listed(value)}
    return out


def check_config_name(name: str) -> str | None:
    """None if the config name composes and selects what it says, else what is wrong (one line)."""
    from workbench.checks import trl_arguments
    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.shaping import build_terms

    groups = term_groups()
    key, value = name.split("=", 1)
    if key.startswith("algo."):
        field = key.removeprefix("algo.")
        cfg = to_train_config(compose("train", [name]))
        args = trl_arguments(cfg, build_terms("regularizer", cfg.regularizer))
        want = yaml.safe_load(value)
        if not hasattr(args, field):
            return f"{name}: {field} is not a field of TRL's {type(args).__name__}"
        got = getattr(args, field)
        return None if got == want else f"{name}: TRL's {field} resolves to {got!r}, not {want!r}"
    if "." in key:
        return f"{name}: only algo.<field>=<value> options may be dotted"
    if not (CONF / key).is_dir():
        return f"{name}: no config group conf/{key}/"
    names = listed(value)
    if key in groups:
        unknown = [n for n in names if n not in groups[key]]
        if unknown:
            return f"{name}: {unknown} not in the {key} registry; registered: {', '.join(sorted(groups[key]))}"
    absent = [n for n in names if not (CONF / key / f"{n}.yaml").is_file()]
    if absent:
        return f"{name}: no conf/{key}/{absent[0]}.yaml"
    cfg = to_train_config(compose("train", [name]))
    if key in groups:
        built = built_names(key, getattr(cfg, key))
        if built != names:
            return f"{name}: composes to {key} terms {built}"
    elif key == "experiment" and cfg.experiment_name != value:
        return f"{name}: composes to experiment_name {cfg.experiment_name!r}"
    return None


def test_check_config_name_catches_wrong_names():
    assert check_config_name("reward=[pear]") is None
    assert check_config_name("experiment=lite_ppo") is None
    assert check_config_name("algo.loss_type=dr_grpo") is None
    assert "not in the reward registry" in check_config_name("reward=[no_such_term]")
    assert "not in the sampler registry" in check_config_name("sampler=[no_such_sampler]")
    assert check_config_name("sampler=knapsack") is None and check_config_name("reward=[correctness,pear]") is None
    assert "['nope'] not in the advantage registry" in check_config_name("advantage=[bnpo,nope]")
    assert "no conf/experiment/" in check_config_name("experiment=no_such_experiment")
    assert "no config group" in check_config_name("loss_type=bnpo")
    assert "only algo." in check_config_name("reward.pear.weight=0.5")
    # the workbench fixes disable_tqdm, so the option does not take the value the name claims
    assert "resolves to True, not False" in check_config_name("algo.disable_tqdm=false")


def test_every_config_name_of_a_built_row_exists():
    problems = [f"card {row.card}: {msg}" for row in method_rows() if row.status in BUILT
                for name in row.names if (msg := check_config_name(name))]
    assert not problems, "README method table:\n" + "\n".join(problems)


def test_every_registered_term_is_in_a_built_row():
    registered = {(group, name) for group, table in term_groups().items() for name in table}
    named = named_terms([r for r in method_rows() if r.status in BUILT])
    missing = sorted(registered - named)
    assert not missing, ("registered terms that no built row of the README's method table names "
                         f"(README, '### Method status': name each in its card's row): {missing}")
