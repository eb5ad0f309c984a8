"""Assertions shared by the CLI tests (importable: pytest puts tests/ on sys.path, it has no __init__.py)."""

from __future__ import annotations


def one_line_error(res, *fragments, code: int = 2) -> str:
    """The CLI result is exactly one `error: ...` line containing every fragment, with exit code `code`."""
    assert res.exit_code == code, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]
