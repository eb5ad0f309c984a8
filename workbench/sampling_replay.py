"""SPEAR's self-imitation replay buffer as a sampler (card 13b): past positive rollouts spliced into later batches.

The buffer logic lives here (admission, eviction, the baseline, the draw, the schedule: pure Python on row records,
tested against a transcription of the authors' code); moving rows between TRL's batch tensors and the buffer is the
adapter's (`workbench.replay.ReplayMixin`). Registered in the sampler table (`workbench.sampler_base`), which
`workbench.sampling` imports this module to fill (``sampler=[spear_replay]``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from typing import Any, ClassVar

from workbench.config import ConfigError
from workbench.sampler_base import Sampler, register

#: The authors cap the tolerated age at 10 steps whatever is configured (`TrajectoryBufferBatch.__init__`).
MAX_TOLERATE_STEPS = 10


def lower_power_of_two(n: int) -> int:
    """The largest power of two <= n, and 0 for n <= 1 (the authors' draw size before the `buffer_size` cap).

    >>> [lower_power_of_two(n) for n in (0, 1, 2, 3, 8, 47)]
    [0, 0, 2, 2, 8, 32]
    """
    return 0 if n <= 1 else 1 << (int(n).bit_length() - 1)


@register
@dataclasses.dataclass
class SpearReplay(Sampler):
    """SPEAR's self-imitation learning (SIL) buffer (Qin et al., "Learn the Ropes, Then Trust the Wins", arXiv
    2509.22601, card 13b). Reference: TencentYoutuResearch/SPEAR ``verl/verl/trainer/ppo/ray_trainer_hybrid.py``
    (``TrajectoryBufferBatch``: ``update_batch``, ``remove_old``, ``get_buffer_size``, ``is_full_capacity``,
    ``get_buffer``, ``prepare_for_selection``; ``RayPPOSFTTrainer.critic_warmup``) and
    ``verl/verl/workers/actor/dp_actor.py::update_policy`` (the replay loss and its schedule), run script
    ``verl/recipe/spear/run_qwen2-32b_spear.sh``; ``tests/test_sampling_replay.py`` transcribes them.

    Each training step t (1-based, the authors' ``global_steps``), after the batch is generated and scored:

    1. **Draw** (before this step's rows are admitted): the buffer's *size* is the number of buffered rows whose
       reward exceeds the baseline b = median of every group-mean reward in the baseline history. When the size
       exceeds 1.5 x `buffer_size`, every buffered row is re-scored A = r - b (divided by (median group std + 1e-6)
       with `std_norm`), the rows with A > 0 are kept, a uniformly random 2^k of them (the largest power of two
       <= their count, at most `buffer_size`) are drawn and the buffer is emptied (the history stays).
    2. **Splice**: the drawn rows replace rows of this step's batch that have advantage 0 (all-same groups, whose
       surrogate gradient is 0, so no on-policy gradient is lost), at most as many as there are such rows; a
       replayed row's advantage is A x w(t), w(t) = `coef` x (1 - cos(pi t / `ramp_steps`)) / 2 for t <=
       `ramp_steps`, else `coef` (the authors' ascending replay-loss weight; the loss is linear in A).
    3. **Admit** this step's batch: buffered entries more than `tolerate_steps` (capped at 10) older than the newest
       entry are evicted; the history drops its oldest steps while it holds more than `baseline_size` group means,
       then gets this step's group means and stds; the rows with positive advantage (and, with `tool_calls_only`,
       at least one tool call) join the buffer with their reward and step.

    Decisions and differences: (1) **Stale log-probs**: the authors keep each row's old log-probs from its
    generation (a policy up to `tolerate_steps` steps older) and train it with their Clip-Cov loss against them; here
    a replayed row has no old log-probs of its own, so TRL's ratio is 1 at the update (the current policy is the
    behaviour policy): its gradient is A x grad log pi, plain self-imitation without importance correction or
    clipping. TRL runs that way only on policy, so the adapter refuses ``algo.num_iterations > 1``, vLLM and a
    reference model (``algo.beta > 0``): it has no log-probs to give the spliced rows. (2) The authors train the
    replay batch as a separate optimizer step after the on-policy one; here the rows share the step's batch,
    TRL's loss aggregation and its token normalisation, and a drawn row finds a slot only where the batch has a
    zero-advantage row (the rest of the draw is dropped: `replay/dropped`). (3) Rewards are the workbench's shaped
    reward (the authors' ``token_level_scores``, their task reward plus tool-call bonus); advantages are TRL's after
    the advantage transforms. (4) `tool_calls_only` (the authors' requirement) needs a task with tools; set it false
    to replay any positive rollout. (5) Loss regularizers and a second-generation sampler (AEPO) are refused with
    it: the spliced rows are not in the rollout record the group layout comes from.

    Defaults: the math recipe's ``trajectory_buffer_size`` 32, ``trajectory_tolerate_steps`` 5,
    ``replay_loss_coef`` 1, ``max_replay_loss_ascending_steps`` 300, ``norm_adv_by_std_in_grpo`` false, and the
    10240 ``baseline_buffer_size`` of the config default and agent scripts (the math script sets 32).
    Metrics (``sampler/spear_replay/<key>``): ``buffer`` (size as defined in 1), ``rows`` (buffered rows),
    ``baseline`` (b), ``weight`` (w(t)), ``drawn``, ``replayed`` (rows spliced on all processes), ``dropped``.
    """

    name: ClassVar[str] = "spear_replay"
    buffer_size: int = 32
    baseline_size: int = 10240
    tolerate_steps: int = 5
    coef: float = 1.0
    ramp_steps: int = 300
    std_norm: bool = False
    tool_calls_only: bool = True

    def __post_init__(self) -> None:
        self.entries: list[dict[str, Any]] = []  # {"step": t, "rows": [{"reward", "prompt_ids", ...}, ...]}
        self.history: list[dict[str, Any]] = []  # {"step": t, "means": [...], "stds": [...]}
        self._last: dict[str, float] = {}

    def check(self) -> None:
        if self.buffer_size < 1 or self.baseline_size < 1 or self.tolerate_steps < 0 or self.ramp_steps < 0:
            raise ConfigError("sampler.spear_replay: buffer_size >= 1, baseline_size >= 1, tolerate_steps >= 0 and "
                              "ramp_steps >= 0")
        if not (self.coef >= 0 and math.isfinite(self.coef)):
            raise ConfigError(f"sampler.spear_replay.coef={self.coef}: expected a finite number >= 0")

    def bind_task(self, task: Any) -> None:
        if self.tool_calls_only and not tuple(getattr(task, "tools", ()) or ()):
            raise ConfigError("sampler.spear_replay.tool_calls_only=true keeps only rollouts with a tool call, and "
                              "this task has no tools (task.tools); set sampler.spear_replay.tool_calls_only=false")

    # ---------------------------------------------------------------- the buffer (the authors' logic)
    def baseline(self) -> tuple[float | None, float | None]:
        """(median group mean, median group std) over the history; (None, None) before any step."""
        means = [m for h in self.history for m in h["means"]]
        stds = [s for h in self.history for s in h["stds"]]
        if not means:
            return None, None
        return float(statistics.median(means)), float(statistics.median(stds))

    def size(self) -> int:
        """Buffered rows whose reward exceeds the baseline (each entry's own mean reward before any history)."""
        b, _ = self.baseline()
        n = 0
        for e in self.entries:
            rewards = [r["reward"] for r in e["rows"]]
            cut = b if b is not None else sum(rewards) / len(rewards)
            n += sum(1 for r in rewards if r > cut)
        return n

    def weight(self, step: int) -> float:
        """w(t) for the 1-based step t: the cosine ramp from 0 to `coef` over `ramp_steps`, then `coef`."""
        if step <= self.ramp_steps:
            return self.coef * (1.0 - math.cos(step / self.ramp_steps * math.pi)) / 2.0
        return self.coef

    def draw(self, rng: random.Random) -> list[tuple[dict[str, Any], float]]:
        """Step 1: (row, re-scored advantage) pairs when the buffer is over capacity, emptying it; else []."""
        if not self.entries or self.size() <= self.buffer_size * 1.5:
            return []
        b, s = self.baseline()
        rows = [r for e in self.entries for r in e["rows"]]
        self.entries = []
        scored = []
        for r in rows:
            a = r["reward"] - b
            if self.std_norm:
                a = a / (s + 1e-6)
            if a > 0:
                scored.append((r, float(a)))
        n = min(lower_power_of_two(len(scored)), self.buffer_size)
        keep = sorted(rng.sample(range(len(scored)), n))
        return [scored[i] for i in keep]

    def admit(self, rows: list[dict[str, Any]], rewards: list[float], advantages: list[float],
              group_size: int, step: int, tool_calls: list[int] | None = None) -> None:
        """Step 3: this step's gathered batch (row records, rewards, advantages; groups of `group_size`)."""
        if self.entries:  # remove_old, against the newest entry (the previous admission)
            newest = self.entries[-1]["step"]
            limit = min(self.tolerate_steps, MAX_TOLERATE_STEPS)
            self.entries = [e for e in self.entries if abs(e["step"] - newest) <= limit]
        while sum(len(h["means"]) for h in self.history) > self.baseline_size and self.history:
            self.history.pop(0)
        groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
        self.history.append({"step": int(step), "means": [sum(g) / len(g) for g in groups],
                             "stds": [statistics.stdev(g) if len(g) > 1 else float("nan") for g in groups]})
        keep = []
        for i, (row, r, a) in enumerate(zip(rows, rewards, advantages)):
            if a > 0 and (not self.tool_calls_only or (tool_calls is not None and tool_calls[i] > 0)):
                keep.append({**row, "reward": float(r)})
        if keep:
            self.entries.append({"step": int(step), "rows": keep})

    # ---------------------------------------------------------------- sampler interface
    def record(self, **metrics: float) -> None:
        """The step's metrics (filed by the adapter once per step, as AEPO's)."""
        b, _ = self.baseline()
        self._last = {"buffer": float(self.size()), "rows": float(sum(len(e["rows"]) for e in self.entries)),
                      **({} if b is None else {"baseline": b}), **{k: float(v) for k, v in metrics.items()}}

    def metrics(self) -> dict[str, float]:
        out, self._last = self._last, {}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "history": self.history} if self.history else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = list(state.get("entries", []))
        self.history = list(state.get("history", []))
