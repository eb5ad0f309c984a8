"""Thread policy (`workbench.progress`): `ThreadChooser` picks the faster of 1 or all threads by measurement and backs
off probing when the probe loses."""

from __future__ import annotations

import pytest

from workbench.progress import ThreadChooser


def _run(chooser: ThreadChooser, seconds_per_token: dict[int, float], steps: int) -> list[int]:
    used = []
    for step in range(steps):
        t = chooser.threads_for(step)
        chooser.record(step, t, seconds_per_token[t] * 1000, 1000)
        used.append(t)
    return used


def test_one_core_never_probes():
    assert _run(ThreadChooser(1), {1: 1.0}, 20) == [1] * 20


def test_first_steps_try_each_option_once():
    used = _run(ThreadChooser(2, probe_every=10), {1: 1.0, 2: 0.5}, 3)
    assert used == [1, 1, 2]  # step 0 warms up on 1 thread, then each option is tried once
    assert ThreadChooser(2).best() == 1  # nothing measured yet: the cheap option


@pytest.mark.parametrize("fast, slow", [(2, 1), (1, 2)])  # an idle machine (2 threads win) or a busy one (1 wins)
def test_settles_on_the_faster_and_probes_the_other_less_and_less(fast, slow):
    chooser = ThreadChooser(2, probe_every=10)
    used = _run(chooser, {fast: 1.0, slow: 20.0}, 300)
    assert chooser.best() == fast and used.count(fast) > 0.95 * len(used)
    probes = [s for s, t in enumerate(used) if t == slow and s > 2]
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert gaps and gaps == sorted(gaps) and gaps[-1] > gaps[0]  # each lost probe doubles the wait
    assert max(gaps) <= 8 * 10  # up to 8x probe_every
