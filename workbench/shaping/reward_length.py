"""Length reward terms: Kimi k1.5, cosine-scaled, DAPO overlong soft punishment and HAPO (METHODS.md cards 4, 5a, 5b,
G2-11).

All lengths are completion **tokens** (``rollouts.lengths``), never characters, and group statistics are taken over
the G rollouts of one prompt, never over the whole batch (the two open-r1 deviations card 4 asks us to fix).
Each term is a pure function on tensors plus a thin registered class that reads the ``Rollouts``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import RewardTerm, register

# ----------------------------------------------------------------------------------------------- Kimi k1.5


def kimi_length_reward(lengths: torch.Tensor, correct: torch.Tensor, group_size: int) -> torch.Tensor:
    """Kimi k1.5 length reward, per prompt group.

    lambda_i = 0.5 - (L_i - L_min) / (L_max - L_min) with L_min, L_max over the group; correct -> lambda_i,
    wrong -> min(0, lambda_i); a group whose lengths are all equal (including G = 1) gets 0 everywhere.

    >>> kimi_length_reward(torch.tensor([10, 20, 30, 30]), torch.tensor([1., 1., 0., 1.]), 4).tolist()
    [0.5, 0.0, -0.5, -0.5]
    >>> kimi_length_reward(torch.tensor([10, 20]), torch.tensor([0., 0.]), 2).tolist()
    [0.0, -0.5]
    """
    lengths = lengths.float().view(-1, group_size)
    lo = lengths.min(dim=1, keepdim=True).values
    hi = lengths.max(dim=1, keepdim=True).values
    span = hi - lo
    lam = torch.where(span > 0, 0.5 - (lengths - lo) / span.clamp(min=1.0), torch.zeros_like(lengths))
    is_correct = correct.view(-1, group_size) > 0.5
    return torch.where(is_correct, lam, lam.clamp(max=0.0)).reshape(-1)


@register
class KimiLength(RewardTerm):
    """Kimi k1.5 length penalty (arXiv 2501.12599; reference code open-r1 ``rewards.py::len_reward``), card 4.

    Per prompt group, in tokens: lambda_i = 0.5 - (L_i - L_min)/(L_max - L_min). Correct answers get lambda_i in
    [-0.5, 0.5]; wrong ones get min(0, lambda_i), so a short wrong answer is never rewarded. All lengths equal -> 0.
    See ``kimi_length_reward`` for the worked example.

    Decisions on the [UNCONFIRMED] points of the card:
    * weight: the code default is 1.0 (the term is then on the same scale as correctness); conf uses 0.5, the weight
      measured in the DESIGN.md prototype (length 31.6 -> 15 tokens on the arithmetic task).
    * warm-up: the paper says the penalty slows early training and is applied in a later phase. ``start_step``
      (default 0: from the start) returns 0 before that optimizer step; the paper's exact schedule is not known.

    Caution (DESIGN.md, measured): with TRL's per-group std scaling an all-wrong group differs only in this term and
    std scaling blows it up; use ``scale_rewards="none"`` or the ``positive_length`` advantage transform instead.
    """

    name = "length_kimi"
    needs = frozenset({"correct", "lengths"})

    def __init__(self, weight: float = 1.0, start_step: int = 0):
        super().__init__(weight)
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.start_step = int(start_step)

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        if rollouts.step < self.start_step:
            return torch.zeros(len(rollouts.completions))
        return kimi_length_reward(rollouts.lengths, rollouts.correct, rollouts.group_size)


# ----------------------------------------------------------------------------------------------- cosine


def cosine_length_reward(
    lengths: torch.Tensor,
    correct: torch.Tensor,
    max_length: float,
    min_wrong: float = -1.0,
    max_wrong: float = -0.5,
    min_correct: float = 0.5,
    max_correct: float = 1.0,
) -> torch.Tensor:
    """Cosine-scaled reward: r = r_lo + 0.5 (r_hi - r_lo)(1 + cos(pi p)), p = clip(L / L_cap, 0, 1).

    Correct: (r_lo, r_hi) = (min_correct, max_correct), so shorter is better. Wrong: (r_lo, r_hi) = (max_wrong,
    min_wrong), so longer wrong answers are penalised less.

    >>> r = cosine_length_reward(torch.tensor([0, 50, 100, 0, 100]), torch.tensor([1., 1., 1., 0., 0.]), 100)
    >>> [round(x, 4) for x in r.tolist()]
    [1.0, 0.75, 0.5, -1.0, -0.5]
    """
    p = (lengths.float() / float(max_length)).clamp(0.0, 1.0)
    is_correct = correct > 0.5
    r_lo = torch.where(is_correct, torch.tensor(min_correct), torch.tensor(max_wrong))
    r_hi = torch.where(is_correct, torch.tensor(max_correct), torch.tensor(min_wrong))
    return r_lo + 0.5 * (r_hi - r_lo) * (1.0 + torch.cos(math.pi * p))


@register
class CosineLength(RewardTerm):
    """Cosine-scaled length reward (Yeo et al., "Demystifying Long CoT", arXiv 2502.03373; open-r1
    ``get_cosine_scaled_reward``), card 5a.

    r = r_lo + 0.5 (r_hi - r_lo)(1 + cos(pi L / L_cap)) with (r_lo, r_hi) = (min_correct, max_correct) for correct
    answers and (max_wrong, min_wrong) for wrong ones. Defaults are open-r1's (-1, -0.5, 0.5, 1.0), but L is in
    tokens and L_cap defaults to the run's ``max_completion_length`` (``max_length`` overrides it). p = L/L_cap is
    clipped to [0, 1] so a smaller cap cannot wrap the cosine around.

    The paper's version *replaces* the accuracy reward (it already separates correct from wrong by at least
    min_correct - max_wrong = 1.0): give ``correctness`` weight 0 to reproduce it, or keep both to add it on top.
    ``exceed_penalty`` (default None: off, as in open-r1) gives truncated completions that fixed value instead;
    the paper's -10 is [UNCONFIRMED].
    """

    name = "length_cosine"
    needs = frozenset({"correct", "lengths"})

    def __init__(
        self,
        weight: float = 1.0,
        min_wrong: float = -1.0,
        max_wrong: float = -0.5,
        min_correct: float = 0.5,
        max_correct: float = 1.0,
        max_length: int | None = None,
        exceed_penalty: float | None = None,
    ):
        super().__init__(weight)
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.min_wrong, self.max_wrong = float(min_wrong), float(max_wrong)
        self.min_correct, self.max_correct = float(min_correct), float(max_correct)
        self.max_length = max_length
        self.exceed_penalty = exceed_penalty

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        cap = self.max_length or rollouts.max_completion_length
        r = cosine_length_reward(
            rollouts.lengths, rollouts.correct, cap, self.min_wrong, self.max_wrong, self.min_correct, self.max_correct
        )
        if self.exceed_penalty is not None:
            r = torch.where(rollouts.truncated.bool(), torch.tensor(float(self.exceed_penalty)), r)
        return r


# ----------------------------------------------------------------------------------------------- DAPO overlong


def overlong_penalty(lengths: torch.Tensor, max_length: int, cache: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO soft overlong punishment: r = min(0, -(L - E) / L_cache * phi), E = L_max - L_cache.

    0 up to E tokens, then linear down to -phi at L_max.

    >>> overlong_penalty(torch.tensor([0, 60, 70, 80]), max_length=80, cache=20).tolist()
    [0.0, 0.0, -0.5, -1.0]
    """
    expected = max_length - cache
    return ((expected - lengths.float()) / cache * factor).clamp(max=0.0)


@register
class OverlongDAPO(RewardTerm):
    """DAPO overlong soft punishment (Yu et al., arXiv 2503.14476; veRL ``reward_manager/dapo.py``), card 5b.

    r = min(0, -(L - E)/L_cache * phi) with E = L_max - L_cache: 0 up to E tokens, then linear to -phi at L_max.
    Added to the task reward. L_max defaults to the run's ``max_completion_length``.

    ``cache`` (the buffer L_cache) defaults to 20% of L_max, the ratio of the paper's 4096 of 20480 tokens, so the
    same conf file works for an 80-token CPU run and a 20k-token GPU run; set an integer to fix it. TRL's
    ``mask_truncated_completions`` is the related "overlong filtering" option.
    """

    name = "overlong_dapo"
    needs = frozenset({"lengths"})

    def __init__(
        self,
        weight: float = 1.0,
        max_length: int | None = None,
        cache: int | None = None,
        cache_fraction: float = 0.2,
        penalty_factor: float = 1.0,
    ):
        super().__init__(weight)
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if cache is not None and cache < 1:
            raise ValueError(f"cache must be >= 1 token, got {cache}")
        if not 0.0 < cache_fraction <= 1.0:
            raise ValueError(f"cache_fraction must be in (0, 1], got {cache_fraction}")
        self.max_length = max_length
        self.cache = cache
        self.cache_fraction = float(cache_fraction)
        self.penalty_factor = float(penalty_factor)

    def resolve(self, max_completion_length: int) -> tuple[int, int]:
        """(L_max, L_cache) for a run."""
        l_max = self.max_length or max_completion_length
        cache = self.cache if self.cache is not None else max(1, math.ceil(self.cache_fraction * l_max))
        if cache > l_max:
            raise ValueError(f"reward.overlong_dapo.cache={cache} exceeds the length budget {l_max}")
        return l_max, cache

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        l_max, cache = self.resolve(rollouts.max_completion_length)
        return overlong_penalty(rollouts.lengths, l_max, cache, self.penalty_factor)


# ----------------------------------------------------------------------------------------------- HAPO


def hapo_length_reward(
    lengths: torch.Tensor,
    correct: torch.Tensor,
    history: torch.Tensor,
    form: str = "cosine",
    tolerance: float = 0.1,
    correct_floor: float = -0.7,
) -> torch.Tensor:
    """HAPO length reward given each rollout's history length h (NaN = no correct answer seen yet -> 0).

    cosine: r = cos(pi/2 * L/h) for L < 2h else -1; correct -> max(floor, r), wrong -> min(0, r).
    linear: correct: 1 - L/h for L < h, 0 up to (1+tol)h, then max(floor, -(L - (1+tol)h)/h);
            wrong: 0 up to (1+tol)h, then max(-1, -(L - (1+tol)h)/h).

    >>> h = torch.tensor([10., 10., 10., float("nan")])
    >>> L, c = torch.tensor([5, 20, 30, 7]), torch.tensor([1., 1., 0., 1.])
    >>> [round(x, 4) for x in hapo_length_reward(L, c, h).tolist()]
    [0.7071, -0.7, -1.0, 0.0]
    >>> [round(x, 4) for x in hapo_length_reward(L, c, h, "linear").tolist()]
    [0.5, -0.7, -1.0, 0.0]
    """
    L = lengths.float()
    known = torch.isfinite(history) & (history > 0)
    h = torch.where(known, history, torch.ones_like(history))
    is_correct = correct > 0.5
    if form == "cosine":
        r = torch.where(L < 2 * h, torch.cos(L / h * (math.pi / 2)), torch.full_like(L, -1.0))
        r = torch.where(is_correct, r.clamp(min=correct_floor), r.clamp(max=0.0))
    elif form == "linear":
        over = -(L - (1 + tolerance) * h) / h
        within = L < (1 + tolerance) * h
        beyond = torch.where(within, torch.zeros_like(L), over.clamp(min=correct_floor))
        r_correct = torch.where(L < h, 1 - L / h, beyond)
        r_wrong = torch.where(within, torch.zeros_like(L), over.clamp(min=-1.0))
        r = torch.where(is_correct, r_correct, r_wrong)
    else:
        raise ValueError(f"form must be 'cosine' or 'linear', got {form!r}")
    return torch.where(known, r, torch.zeros_like(r))


@register
class HAPOLength(RewardTerm):
    """HAPO: History-Aware Policy Optimization (Huang, Zhang, Cardie, arXiv 2505.11225; HCY123902/HAPO ``utils.py``,
    ``grpo_trainer.py``), card G2-11.

    Keeps, per prompt (``rollouts.prompt_keys``), the history h = the minimum token length of the correct responses
    generated for it so far (``mode="mean"``: their running mean). A response is rewarded for beating its own
    history (see ``hapo_length_reward``): cosine form (default) r = cos(pi/2 L/h) for L < 2h else -1, correct
    answers floored at -0.7 so every correct answer still beats every wrong one (with correctness weight 1), wrong
    answers capped at 0 so short wrong answers are never rewarded. No history yet -> 0.

    Order: a batch is scored against the history of *previous* batches, then its correct lengths update the history
    (as in HAPO's ``combined_reward_func``: "history of previously generated responses"). Consequently the first
    time a prompt is seen, the term is 0. Lengths of 0 are not recorded (h = 0 would be a division by zero; HAPO
    treats h <= 0 as "no history"). Every call updates the history, so the trainer calls it on training batches only.

    The history is cross-step state: ``state_dict`` returns ``{"history": {str(key): h}, "counts": {...}}``
    (JSON-serialisable; keys are ``str(prompt_key)``), saved with checkpoints and restored on resume.
    Defaults are HAPO's: cosine form, mode min, tolerance 0.1 (linear form only), weight w_lr 1.0.
    """

    name = "length_hapo"
    needs = frozenset({"correct", "lengths"})

    def __init__(
        self,
        weight: float = 1.0,
        form: str = "cosine",
        mode: str = "min",
        tolerance: float = 0.1,
        correct_floor: float = -0.7,
    ):
        super().__init__(weight)
        if form not in ("cosine", "linear"):
            raise ValueError(f"form must be 'cosine' or 'linear', got {form!r}")
        if mode not in ("min", "mean"):
            raise ValueError(f"mode must be 'min' or 'mean', got {mode!r}")
        self.form, self.mode = form, mode
        self.tolerance = float(tolerance)
        self.correct_floor = float(correct_floor)
        self.history: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._metrics: dict[str, float] = {}

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        keys = [str(k) for k in rollouts.prompt_keys]
        history = torch.tensor([self.history.get(k, float("nan")) for k in keys], dtype=torch.float32)
        r = hapo_length_reward(
            rollouts.lengths, rollouts.correct, history, self.form, self.tolerance, self.correct_floor
        )
        self._update(keys, rollouts.lengths.tolist(), (rollouts.correct > 0.5).tolist())
        self._metrics = {
            "with_history": float(torch.isfinite(history).float().mean()) if len(keys) else 0.0,
            "prompts_tracked": float(len(self.history)),
        }
        return r

    def _update(self, keys: list[str], lengths: list[int], correct: list[bool]) -> None:
        batch: dict[str, list[int]] = {}
        for k, n, c in zip(keys, lengths, correct):
            if c and n > 0:
                batch.setdefault(k, []).append(int(n))
        for k, ns in batch.items():
            if self.mode == "min":
                self.history[k] = float(min(min(ns), self.history.get(k, math.inf)))
            else:
                old_n = self.counts.get(k, 0)
                old_mean = self.history.get(k, 0.0)
                self.history[k] = (old_mean * old_n + sum(ns)) / (old_n + len(ns))
            self.counts[k] = self.counts.get(k, 0) + len(ns)

    def state_dict(self) -> dict[str, Any]:
        return {"history": dict(self.history), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {str(k): float(v) for k, v in state.get("history", {}).items()}
        self.counts = {str(k): int(v) for k, v in state.get("counts", {}).items()}

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
