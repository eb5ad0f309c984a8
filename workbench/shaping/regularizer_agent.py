"""Loss-side regularizers for multi-turn agents: EPO's trajectory entropy bonus with per-turn smoothing (card 9)."""

from __future__ import annotations

import math
from typing import Any

import torch

from workbench.shaping.base import Regularizer, register
from workbench.shaping.loss_batch import LossBatch

EPO_PENALTIES = ("hinge", "released")


def turn_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) long: the assistant turn each token belongs to, counted from 0. Turns are the runs of loss-mask 1s; a
    run of 0s inside the completion (a tool result, TRL's tool mask) starts the next turn.

    >>> turn_index(torch.tensor([[1, 1, 0, 0, 1, 0], [1, 1, 1, 1, 0, 0]])).tolist()
    [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]
    """
    m = mask.long()
    prev = torch.nn.functional.pad(m[:, :-1], (1, 0))
    starts = (m == 1) & (prev == 0)
    return (starts.long().cumsum(dim=1) - 1).clamp_min(0)


def epoch_weight(step: int, total: int) -> float:
    """EPO's phase weight of the smoothing penalty (``enable_smooth_weights``): 1 - 0.2 (1 - e^{-2 p}) over the first
    half of `total` steps, then 0.8 e^{-3 p} over the second (p: progress within the half).

    >>> [round(epoch_weight(s, 150), 4) for s in (0, 75, 150)]
    [1.0, 0.8271, 0.0398]
    """
    step = max(0, min(int(step), int(total)))
    half = total // 2
    if step <= half:
        return 1.0 if half == 0 else 1.0 - 0.2 * (1 - math.exp(-2.0 * step / half))
    rest = total - half
    return 0.8 if rest == 0 else 0.8 * math.exp(-3.0 * (step - half) / rest)


@register
class EPOEntropy(Regularizer):
    """EPO: Entropy-regularised Policy Optimization for multi-turn agents (Xu et al., arXiv 2509.22576;
    WujiangXu/EPO ``verl/workers/actor/dp_actor.py``: ``generate_entropy_penalty``, the policy-loss assembly,
    ``_calculate_epoch_based_entropy_weight``), card 9.

    Added loss, per micro-batch: -entropy_coef (H_bar - smooth_coef P_bar), both token means over the loss mask;
    H_bar is the entropy of all turns of the trajectories (trajectory-level regularisation). With h_j the history
    of turn j (the mean over steps so far, this one included, of the step's mean token entropy at turn j):

    * ``penalty="hinge"`` (default, the paper's intent): P_t = (H_t - kappa_high h_j)_+ + (kappa_low h_j - H_t)_+,
      with gradient, so tokens whose entropy leaves [kappa_low h_j, kappa_high h_j] are pulled back;
    * ``penalty="released"``: P_t = 0 inside the open band, ``out_range_penalty`` outside, the released code's
      constant mask: its value enters the loss but has **no gradient**, so only the entropy bonus acts.

    Turns: the multi-turn task (``task.tools``, e.g. ``experiment=agentic_plain``) writes one completion with the
    tool results masked out; each run of model tokens is one turn (`turn_index`), the authors' ``rollout_step``.
    Without tools the whole completion is turn 0. The penalty applies to turns >= ``smooth_start_turn`` (the
    authors apply it to a micro-batch once any sample's step is >= max_steps / 2 of the environment, 50 steps
    there; default 0 here, where episodes are a few turns), and is scaled by `epoch_weight` over
    ``schedule_steps`` optimizer steps when that is > 0 (the authors' ``enable_smooth_weights`` over 150 epochs;
    off by default). Defaults: entropy_coef 1e-3, smooth_coef 1, kappa 0.8 / 1.2, out_range_penalty 0.1 (the
    authors' config defaults; their README runs use kappa_low 0 and kappa_high 2). The history is saved with
    checkpoints.
    """

    name = "epo_entropy"

    def __init__(self, entropy_coef: float = 1e-3, smooth_coef: float = 1.0, kappa_low: float = 0.8,
                 kappa_high: float = 1.2, penalty: str = "hinge", out_range_penalty: float = 0.1,
                 smooth_start_turn: int = 0, schedule_steps: int = 0):
        if penalty not in EPO_PENALTIES:
            raise ValueError(f"penalty={penalty!r}; choose from {', '.join(EPO_PENALTIES)}")
        if not 0 <= kappa_low <= kappa_high:
            raise ValueError(f"need 0 <= kappa_low <= kappa_high, got {kappa_low}, {kappa_high}")
        if smooth_start_turn < 0 or schedule_steps < 0:
            raise ValueError(f"smooth_start_turn and schedule_steps must be >= 0, got {smooth_start_turn}, "
                             f"{schedule_steps}")
        self.entropy_coef, self.smooth_coef = float(entropy_coef), float(smooth_coef)
        self.kappa_low, self.kappa_high = float(kappa_low), float(kappa_high)
        self.penalty, self.out_range_penalty = penalty, float(out_range_penalty)
        self.smooth_start_turn, self.schedule_steps = int(smooth_start_turn), int(schedule_steps)
        self.past: dict[int, list[float]] = {}  # turn -> [sum of step means, number of steps] over finished steps
        self.current: dict[int, list[float]] = {}  # turn -> [entropy sum, token count] of the step in progress
        self.current_step: int | None = None
        self._metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ history
    def _advance(self, step: int) -> None:
        if self.current_step is not None and step != self.current_step:
            for turn, (total, count) in self.current.items():
                if count > 0:
                    acc = self.past.setdefault(turn, [0.0, 0.0])
                    acc[0] += total / count
                    acc[1] += 1.0
            self.current = {}
        self.current_step = step

    def history(self) -> dict[int, float]:
        """turn -> mean over steps (the current one's running mean included) of each step's mean entropy."""
        out = {}
        for turn in set(self.past) | set(self.current):
            total, n = self.past.get(turn, [0.0, 0.0])
            cur_sum, cur_count = self.current.get(turn, [0.0, 0.0])
            if cur_count > 0:
                total, n = total + cur_sum / cur_count, n + 1
            if n > 0:
                out[turn] = total / n
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"past": {str(k): v for k, v in self.past.items()}} if self.past else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.past = {int(k): list(v) for k, v in state.get("past", {}).items()}

    # ------------------------------------------------------------------ loss
    def loss(self, batch: LossBatch) -> torch.Tensor | None:
        H = batch.require("entropies", self.name)
        mask = batch.mask.to(H.dtype)
        n = mask.sum()
        if n <= 0:
            self._metrics = {"entropy": 0.0, "penalty": 0.0, "out_of_band_frac": 0.0}
            return None
        self._advance(int(batch.step))
        turns = turn_index(batch.mask)
        Hd = H.detach()
        for turn in torch.unique(turns[batch.mask.bool()]).tolist():
            sel = batch.mask.bool() & (turns == turn)
            acc = self.current.setdefault(int(turn), [0.0, 0.0])
            acc[0] += float(Hd[sel].sum())
            acc[1] += float(sel.sum())
        hist = self.history()
        h = torch.zeros_like(Hd)
        for turn, value in hist.items():
            h = torch.where(turns == turn, torch.full_like(Hd, value), h)
        low, high = self.kappa_low * h, self.kappa_high * h
        applies = (turns >= self.smooth_start_turn).to(H.dtype) * mask
        outside = ~((Hd > low) & (Hd < high))
        if self.penalty == "hinge":
            P = torch.relu(H - high) + torch.relu(low - H)
        else:
            P = torch.where(outside, torch.full_like(Hd, self.out_range_penalty), torch.zeros_like(Hd))
        weight = epoch_weight(batch.step, self.schedule_steps) if self.schedule_steps > 0 else 1.0
        H_bar = (H * mask).sum() / n
        P_bar = (P * applies).sum() / n * weight
        self._metrics = {
            "entropy": float(H_bar.detach()),
            "penalty": float(P_bar.detach()),
            "out_of_band_frac": float((outside.to(H.dtype) * applies).sum() / n),
            "turns": float(turns[batch.mask.bool()].max()) + 1.0,
        }
        return -self.entropy_coef * (H_bar - self.smooth_coef * P_bar)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
