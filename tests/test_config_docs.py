"""Every key in every conf/**/*.yaml file has a comment line directly above it (the verl habit, STYLE.md #1).

A key line is ``<indent><key>:`` that is not a list item. The previous non-blank line must be a comment at the same
or a lower indentation. Lines inside block scalars (``key: |`` / ``key: >``) and list items (the Hydra
``defaults:`` entries among them) are not keys and are skipped.
"""

import re
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[1] / "conf"
KEY = re.compile(r"^(\s*)([\w.@/-]+|\"[^\"]+\"|'[^']+'):(\s|$)")
BLOCK_SCALAR = re.compile(r":\s*[|>][-+0-9]*\s*(#.*)?$")


def indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def undocumented_keys(text: str) -> list[tuple[int, str]]:
    """(line number, key line) for every key without a comment directly above it."""
    missing = []
    previous: str | None = None  # previous non-blank line
    block_indent: int | None = None  # indentation of the key that opened a block scalar
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if block_indent is not None:
            if indent(line) > block_indent:
                continue
            block_indent = None
        stripped = line.lstrip()
        match = KEY.match(line)
        if match and not stripped.startswith(("-", "#")):
            documented = previous is not None and previous.lstrip().startswith("#") and indent(previous) <= indent(line)
            if not documented:
                missing.append((number, line.rstrip()))
            if BLOCK_SCALAR.search(line):
                block_indent = indent(line)
        previous = line
    return missing


def test_checker_on_examples():
    good = "# a\na:\n  # b\n  b: 1\n  # c\n  c: |\n    not: a key\n# d\nd:\n  - x: 1\n"
    assert undocumented_keys(good) == []
    bad = "# a\na:\n  b: 1\n\n  # c\n  c: 2\nd: 3\n"
    assert [n for n, _ in undocumented_keys(bad)] == [3, 7]
    # a comment deeper than the key does not document it
    assert [n for n, _ in undocumented_keys("a:\n    # deep\n  b: 1\n")] == [1, 3]


YAML_FILES = sorted(CONF.rglob("*.yaml"))


def test_conf_tree_exists():
    assert YAML_FILES, f"no yaml files under {CONF}"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_every_config_key_has_a_comment_above(path):
    missing = undocumented_keys(path.read_text())
    assert not missing, f"{path.relative_to(CONF.parent)}: keys without a comment line above: " + "; ".join(
        f"line {n}: {line.strip()}" for n, line in missing
    )
