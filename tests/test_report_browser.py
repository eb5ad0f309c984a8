"""The rl compare HTML report in a real headless browser (Debian's chromium).

- A screenshot of the report is non-trivial and shows the table and the plots (their colours are on the page).
- A completion, a config value and a run name carrying <script> / <img onerror> are shown as text: nothing
  executes and no injected element exists in the DOM, with and without the report's Content-Security-Policy.
  A positive control proves that this chromium does run such scripts, so the negative result means something.

Skipped only when /usr/bin/chromium is absent and CI is not set; under CI (CI=true) a missing chromium fails.
Install: apt-get update && apt-get install -y chromium
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
APT = "apt-get update && apt-get install -y chromium"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI, reason=f"chromium not installed ({APT}); required when CI is set"
)

EVIL = "<script>document.title='PWNED'</script><img id=\"pwn\" src=x onerror=\"document.title='PWNED2'\">"


def _helpers():
    """The hand-made run directory builders of test_compare.py (loaded by path: independent of import mode)."""
    spec = importlib.util.spec_from_file_location("_compare_helpers", Path(__file__).with_name("test_compare.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def chromium(*args: str, profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.fail(f"CI is set but chromium is missing: {APT}")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    h = _helpers()
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "runs"
    h.build_study(root, injected=EVIL)
    h.make_run(root, "2026-11-22_12-00-00_evil", {"name": "evil<img id=\"pwn3\" src=x onerror=\"document.title='PWNED3'\">",
                                                  "task": {"path": EVIL.replace("pwn", "pwn2")}},
               summary={"eval/accuracy": 0.2, "eval/length/mean": 30.0}, rows=h.curve_rows(10, 0.2, 30, 7),
               samples=h.sample_rows([5], EVIL))
    out = tmp / "report.html"
    from typer.testing import CliRunner

    from cli.main import app

    res = CliRunner().invoke(app, ["compare", str(root), "--report", str(out), "--format", "md"])
    assert res.exit_code == 0, res.output
    return out


def _count_colour(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 4) -> int:
    return int((np.abs(img[:, :, :3].astype(int) - np.array(rgb)) <= tol).all(axis=2).sum())


def test_screenshot_shows_table_and_plots(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri(), profile=tmp_path / "profile")
    assert shot.exists(), res.stderr[-2000:]
    if os.environ.get("RL_REPORT_SCREENSHOT"):  # keep a copy to look at
        shutil.copy(shot, os.environ["RL_REPORT_SCREENSHOT"])
    assert shot.stat().st_size > 50_000
    img = np.round(imread(str(shot)) * 255).astype(np.uint8)
    assert img.shape[:2] == (3000, 1400)
    flat = img[:, :, :3].reshape(-1, 3)
    packed = (flat[::3, 0].astype(np.uint32) << 16) | (flat[::3, 1].astype(np.uint32) << 8) | flat[::3, 2]
    colours = np.unique(packed)
    assert len(colours) > 300, len(colours)  # antialiased text and plots, not a blank page
    assert (flat.min(axis=1) < 250).mean() > 0.05  # a good part of the page is not white
    # the table: its header background and the baseline row's tint are painted
    assert _count_colour(img, (0xEE, 0xF1, 0xF6), tol=1) > 2000
    assert _count_colour(img, (0xF3, 0xF8, 0xFF), tol=1) > 2000
    # the plots: matplotlib's tab10 blue and orange (group lines, markers, bands) are painted
    assert _count_colour(img, (31, 119, 180)) > 500
    assert _count_colour(img, (255, 127, 14)) > 500


def test_injected_script_does_not_execute(report, tmp_path):
    html = report.read_text()
    dom = chromium("--dump-dom", "--virtual-time-budget=2000", report.as_uri(), profile=tmp_path / "p1").stdout
    assert "<table" in dom and 'class="plot"' in dom, dom[:500]
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert title.startswith("rl compare report") and "PWNED" not in title
    for marker in ('id="pwn"', 'id="pwn2"', 'id="pwn3"'):
        assert f"<img {marker}" not in dom  # no injected element
    assert "<script" not in dom.lower()
    # ... the payload is there, as text: the completion in the sample browser, the config value, the run name
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;&lt;img id=\"pwn\"" in dom
    assert '&lt;img id="pwn2"' in dom and '&lt;img id="pwn3"' in dom

    # escaping alone is enough: the same page without its Content-Security-Policy still runs nothing
    no_csp = tmp_path / "no_csp.html"
    no_csp.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html))
    assert "Content-Security-Policy" not in no_csp.read_text()
    dom = chromium("--dump-dom", "--virtual-time-budget=2000", no_csp.as_uri(), profile=tmp_path / "p2").stdout
    assert "PWNED" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert "<img id=\"pwn" not in dom and "<script" not in dom.lower()

    # positive control: this chromium does execute the same payload when it is not escaped
    control = tmp_path / "control.html"
    control.write_text(f"<!DOCTYPE html><html><head><title>clean</title></head><body>{EVIL}</body></html>")
    dom = chromium("--dump-dom", "--virtual-time-budget=2000", control.as_uri(), profile=tmp_path / "p3").stdout
    assert re.search(r"<title>(.*?)</title>", dom, re.S).group(1).startswith("PWNED")
    assert '<img id="pwn"' in dom
