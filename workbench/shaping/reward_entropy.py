"""Entropy reward terms: PEAR, the phase-entropy-aware reward (METHODS.md card 1), and ARES's difficulty-aware
window-entropy reward (card 12).

Per-token entropies of the sampled completions reach reward terms through ``rollouts.entropies`` (signal
``entropy``), and the think/answer split through ``rollouts.think_mask`` / ``answer_mask`` / ``has_think_close``
(signal ``phase``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import RewardTerm, register


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Mean of ``x`` over ``mask`` along ``dim``; 0 where the mask is empty (never NaN).

    >>> masked_mean(torch.tensor([[1., 3.], [5., 7.]]), torch.tensor([[1, 1], [0, 0]])).tolist()
    [2.0, 0.0]
    """
    m = mask.to(x.dtype)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def phase_entropies(
    entropies: torch.Tensor,
    mask: torch.Tensor,
    think_mask: torch.Tensor | None = None,
    answer_mask: torch.Tensor | None = None,
    has_think_close: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean think-phase and answer-phase entropy per rollout, (B,) each.

    A rollout without ``</think>`` (or with no phase masks at all) is all thinking: every valid token counts as
    think and its answer entropy is 0. Empty phases give 0, never NaN.

    >>> H = torch.tensor([[1., 1., 0.2, 0.4], [2., 2., 2., 0.]])
    >>> mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    >>> think = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).bool()
    >>> answer = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]]).bool()
    >>> h_think, h_answer = phase_entropies(H, mask, think, answer, torch.tensor([True, False]))
    >>> [round(x, 4) for x in h_think.tolist()], [round(x, 4) for x in h_answer.tolist()]
    ([1.0, 2.0], [0.3, 0.0])
    """
    valid = mask.bool()
    if think_mask is None or answer_mask is None:
        think, answer = valid, torch.zeros_like(valid)
    else:
        closed = torch.ones(valid.shape[0], dtype=torch.bool) if has_think_close is None else has_think_close.bool()
        closed = closed.unsqueeze(1)
        think = torch.where(closed, think_mask.bool() & valid, valid)
        answer = answer_mask.bool() & valid & closed
    return masked_mean(entropies, think), masked_mean(entropies, answer)


def pear_reward(
    h_think: torch.Tensor,
    h_answer: torch.Tensor,
    answer_coef: float = 0.0,
    answer_cap: float = 1.0,
) -> torch.Tensor:
    """PEAR as implemented here: r = -H_think + answer_coef * min(H_answer, answer_cap).

    >>> r = pear_reward(torch.tensor([1.0, 2.0]), torch.tensor([0.3, 5.0]), answer_coef=0.5, answer_cap=1.0)
    >>> [round(x, 4) for x in r.tolist()]
    [-0.85, -1.5]
    """
    return -h_think + answer_coef * h_answer.clamp(max=answer_cap)


@register
class PEAR(RewardTerm):
    """PEAR: Phase Entropy Aware Reward (Huang, Lu, Zhang, arXiv 2510.08026, ICLR 2026; github.com/iNLP-Lab/PEAR),
    card 1.

    r_i = -H_think,i + answer_coef * min(H_answer,i, answer_cap), times ``weight`` (the penalty strength alpha).
    H_think is the mean per-token entropy (nats) of the tokens up to and including ``</think>``, H_answer the mean
    over the tokens after it, both from the entropies of the sampled completions (signal ``entropy``).

    Decision on the [UNCONFIRMED] formula (the paper's words: "penalize excessive entropy during the thinking phase
    and allow moderate exploration at the final answer phase"; the exact combination was not recovered):
    * the penalty is linear in the mean think entropy, so it does not depend on length by itself (a mean, not a
      sum); shorter thinking comes from lower-entropy (more committed) thinking, which the paper links to length;
    * the answer phase is **not penalised**. ``answer_coef`` (default 0) can add a small allowance for answer
      entropy, capped at ``answer_cap`` nats so it can never be farmed by emitting noise after ``</think>``;
    * the term applies to all rollouts, right and wrong (the card: "correctness minus a weighted penalty");
      ``correct_only=True`` restricts it to correct ones, which avoids the all-wrong-group failure DESIGN.md measured
      for length terms under per-group std scaling (there the entropy term is the only signal left);
    * weight: conf uses 0.1, so that even at the tiny model's maximum entropy (ln 48 = 3.9 nats) a correct answer
      still outscores a wrong one by >= 0.6 with correctness weight 1. The paper's weight is unknown.
    Edge cases: no ``</think>`` -> every token counts as thinking and H_answer = 0; zero-length completion or empty
    mask -> 0; no NaN. Third-party "PEAR entropy.py" copies with an "entropy relief" bonus are not PEAR (card 1).
    """

    name = "pear"
    needs = frozenset({"entropy", "phase", "correct"})

    def __init__(
        self, weight: float = 1.0, answer_coef: float = 0.0, answer_cap: float = 1.0, correct_only: bool = False
    ):
        super().__init__(weight)
        if answer_cap < 0:
            raise ValueError(f"answer_cap must be >= 0, got {answer_cap}")
        self.answer_coef = float(answer_coef)
        self.answer_cap = float(answer_cap)
        self.correct_only = bool(correct_only)
        self._metrics: dict[str, float] = {}

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        if rollouts.entropies is None:
            raise ValueError("reward.pear needs per-token entropies (signal 'entropy'), but rollouts.entropies is None")
        H = rollouts.entropies.detach().float()
        mask = rollouts.mask
        if mask is None:
            mask = torch.arange(H.shape[1]).unsqueeze(0) < rollouts.lengths.unsqueeze(1)
        h_think, h_answer = phase_entropies(
            H, mask, rollouts.think_mask, rollouts.answer_mask, rollouts.has_think_close
        )
        r = pear_reward(h_think, h_answer, self.answer_coef, self.answer_cap)
        if self.correct_only:
            r = torch.where(rollouts.correct > 0.5, r, torch.zeros_like(r))
        self._metrics = {"think_entropy": float(h_think.mean()), "answer_entropy": float(h_answer.mean())}
        return r

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- ARES

#: ARES's per-difficulty constants (authors' `examples/reward_function/aepo.py::compute_score`)
ARES_BUCKETS = ("easy", "medium", "hard")
ARES_MARGIN_FRAC = {"easy": 0.15, "medium": 0.25, "hard": 0.35}
ARES_KAPPA = {"easy": 2.0, "medium": 3.0, "hard": 4.0}
ARES_TEMP = {"easy": 2.0, "medium": 2.5, "hard": 3.0}
ARES_CAP_SCALE = {"easy": 1.0, "medium": 1.0, "hard": 1.2}
ARES_WRONG_GAIN = {"easy": 0.6, "medium": 0.8, "hard": 1.0}
#: a few reasoning trigger words (the authors ship a longer list in `data/crucial_token_final_version.json`;
#: pass it with `triggers_file`)
ARES_TRIGGERS = ("wait", "but", "however", "alternatively", "hmm", "maybe", "perhaps", "actually", "check",
                 "verify", "therefore", "so", "since", "if", "instead", "reconsider")


def normalize_token(text: str) -> str:
    """A decoded token as ARES compares it with the trigger list: leading ▁/Ġ removed, stripped, lower case.

    >>> normalize_token("ĠWait"), normalize_token(" But ")
    ('wait', 'but')
    """
    return text.lstrip("▁Ġ").strip().lower()


def window_threshold(entropies: torch.Tensor, percentile: float = 98.0, window: int = 8) -> float:
    """One sample's entropy threshold: the `percentile` of its forward-window mean entropies. Position i's value is
    the mean of the `window` entropies after it; positions without a full window take the mean of the values so
    far (so: the mean of the full windows, or the first token's entropy when there is none), as ARES does.

    >>> round(window_threshold(torch.tensor([0., 1., 2., 3., 4.]), 50.0, window=2), 4)  # windows 1.5, 2.5, 3.5
    2.5
    """
    H = entropies.double().reshape(-1)
    L = H.numel()
    if L == 0:
        return 0.0
    full = H[1:].unfold(0, window, 1).mean(dim=1) if L - 1 >= window else H.new_zeros(0)
    fill = full.mean() if full.numel() else H[0]
    values = torch.cat([full, fill.expand(L - full.numel())])
    return float(torch.quantile(values, percentile / 100.0))


def trigger_window_count(entropies: torch.Tensor, triggers: torch.Tensor, threshold: float, window: int = 4) -> int:
    """ARES's high-window-entropy count N of one sample: trigger tokens with a full `window` of tokens after them
    whose mean entropy is >= `threshold`.

    >>> trigger_window_count(torch.tensor([0., 2., 2., 0., 0., 0.]), torch.tensor([1, 0, 0, 0, 0, 1]).bool(), 1.0, 2)
    1
    """
    H = entropies.double().reshape(-1)
    L = H.numel()
    if L - 1 < window:
        return 0
    following = H[1:].unfold(0, window, 1).mean(dim=1)  # (L - window,): the window after position i
    hits = triggers.reshape(-1)[: following.numel()].bool() & (following >= threshold)
    return int(hits.sum())


def ares_difficulty(accuracy: float) -> str:
    """The bucket of a group's accuracy: >= 2/3 easy, >= 1/3 medium, else hard (2/3 itself is easy).

    >>> [ares_difficulty(a) for a in (1.0, 2 / 3, 0.5, 1 / 3, 0.0)]
    ['easy', 'easy', 'medium', 'medium', 'hard']
    """
    return "easy" if accuracy >= 2 / 3 else "medium" if accuracy >= 1 / 3 else "hard"


def ares_entropy_score(n: float, target: float, alpha: float, bucket: str, correct: bool) -> float:
    """ARES's hierarchical entropy reward of one rollout with N = `n` high-window-entropy triggers.

    Δ = N - N*, margin m = max(1, frac * max(N*, 1)), Huber(x; κ) = x²/(2κ) for x <= κ else x - κ/2, sat(x; T) =
    sigmoid(x / T), cap = α (x1.2 hard). Easy correct: -min(cap, Huber((Δ - m)+)/(m + κ) cap); medium correct: the
    same on (|Δ| - m)+; easy/medium wrong: sat((Δ - m)+) cap (x0.6 easy, x0.8 medium); hard correct:
    sat(Δ + m) cap if Δ >= -m, else -min(cap, 0.5 Huber(-Δ - m)/(m + κ) cap); hard wrong: sat((Δ - m)+) cap.

    >>> [round(ares_entropy_score(n, 4, 0.5, "easy", True), 4) for n in (4, 6, 10)]  # margin 1, excess 0, 1, 5
    [-0.0, -0.0417, -0.5]
    >>> round(ares_entropy_score(4, 4, 0.5, "hard", False), 4)  # sat(0) x cap 0.5 x 1.2
    0.3
    """
    frac, kappa, temp = ARES_MARGIN_FRAC[bucket], ARES_KAPPA[bucket], ARES_TEMP[bucket]
    cap = alpha * ARES_CAP_SCALE[bucket]
    delta = n - target
    margin = max(1.0, frac * max(target, 1.0))

    def huber(x: float) -> float:
        x = max(x, 0.0)
        return 0.5 * x * x / kappa if x <= kappa else x - 0.5 * kappa

    def sat(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x / max(temp, 1e-6)))

    if bucket in ("easy", "medium"):
        if correct:
            excess = delta - margin if bucket == "easy" else abs(delta) - margin
            return -min(cap, huber(excess) / (margin + kappa) * cap)
        return sat(max(delta - margin, 0.0)) * cap * ARES_WRONG_GAIN[bucket]
    if correct:
        if delta >= -margin:
            return sat(delta + margin) * cap
        return -min(cap, 0.5 * huber(-delta - margin) / (margin + kappa) * cap)
    return sat(max(delta - margin, 0.0)) * cap


@register
class ARESEntropy(RewardTerm):
    """ARES's difficulty-aware entropy reward (Chen et al., "ARES: Multimodal Adaptive Reasoning via Difficulty-Aware
    Token-Level Entropy Shaping", arXiv 2510.08457, ICLR 2026; github.com/shawn0728/ARES,
    `examples/reward_function/aepo.py::compute_score`, `verl/workers/rollout/vllm_rollout_spmd.py`,
    `verl/trainer/ray_trainer.py::update_difficulty_and_skip_gid_set`), card 12. Its RL stage is also called AEPO;
    not the Arbitrary Entropy PO of card 11 (METHODS.md "Name clashes").

    Per rollout, N = the number of reasoning-trigger tokens (`triggers`, matched on the normalised decoded token)
    whose next `window` (4) tokens have mean entropy >= θ. θ is a running threshold: each sample's `percentile`
    (98th) of its `threshold_window` (8)-token forward-window mean entropies, the batch median of those, and an
    EMA (0.99) across steps; a batch is counted with θ as it stood before the batch (the first batch: its own).
    Each group's accuracy gives its bucket (easy >= 2/3 > medium >= 1/3 > hard); per bucket the target
    N* = round(mean over its groups of the group-mean N) (Python's half-to-even) and the coefficient α (init 0.5)
    takes one dual-ascent step, α += lr (mean N - N*) for easy/medium and lr (N* - mean N) for hard, clipped to
    [0, 2]; then `ares_entropy_score` gives the reward: correct answers on easy questions are penalised for
    exploring too much, wrong ones (and hard questions) are paid for more high-entropy reasoning. The returned
    value is the entropy term only: ARES's accuracy part is the run's `correctness` term.
    State (θ, α and N* per bucket) is in `state_dict`, so it survives checkpoints.

    Decisions and differences:
    * entropies are the full-vocabulary entropies of the sampled completions (signal `entropy`), not vLLM's top-20
      with the tail mass; triggers are matched on the *sampled* token, where the released code decodes the most
      likely token of each position's top-k;
    * the released code's α moves only by the rounding residual of N* (at most 0.5 lr), and we keep that; N* and
      α come from this batch before its rewards (as released), and the difficulty from this group's accuracy;
    * the difficulty-aware KL (off in the shipped config) and the format score are not part of this term;
    * without a tokenizer (tests) the term matches `trigger_ids` only.
    """

    name = "ares_entropy"
    needs = frozenset({"entropy", "correct"})

    def __init__(
        self,
        weight: float = 1.0,
        triggers: list[str] | None = None,
        triggers_file: str | None = None,
        trigger_ids: list[int] | None = None,
        window: int = 4,
        threshold_window: int = 8,
        percentile: float = 98.0,
        threshold_ema: float = 0.99,
        alpha_init: float = 0.5,
        alpha_lr: float = 0.05,
        alpha_max: float = 2.0,
    ):
        super().__init__(weight)
        if window < 1 or threshold_window < 1:
            raise ValueError(f"window and threshold_window must be >= 1, got {window}, {threshold_window}")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        if not 0.0 <= threshold_ema < 1.0:
            raise ValueError(f"threshold_ema must be in [0, 1), got {threshold_ema}")
        if alpha_lr < 0 or not 0.0 <= alpha_init <= alpha_max:
            raise ValueError(f"need alpha_lr >= 0 and 0 <= alpha_init <= alpha_max, got {alpha_lr}, {alpha_init}")
        words = list(ARES_TRIGGERS if triggers is None else triggers)
        if triggers_file:
            import json

            with open(triggers_file, encoding="utf-8") as f:
                words += [str(w) for w in json.load(f)]
        self.trigger_words = frozenset(normalize_token(w) for w in words)
        self.trigger_ids = frozenset(int(t) for t in (trigger_ids or ()))
        self.window, self.threshold_window = int(window), int(threshold_window)
        self.percentile, self.threshold_ema = float(percentile), float(threshold_ema)
        self.alpha_lr, self.alpha_max = float(alpha_lr), float(alpha_max)
        self.threshold: float | None = None
        self.alpha = {b: float(alpha_init) for b in ARES_BUCKETS}
        self.target: dict[str, float] = {}
        self._tokenizer = None
        self._is_trigger: dict[int, bool] = {}
        self._metrics: dict[str, float] = {}

    def bind_tokenizer(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._is_trigger = {}

    def is_trigger(self, token_id: int) -> bool:
        if token_id not in self._is_trigger:
            hit = token_id in self.trigger_ids
            if not hit and self._tokenizer is not None:
                hit = normalize_token(self._tokenizer.decode([token_id])) in self.trigger_words
            self._is_trigger[token_id] = hit
        return self._is_trigger[token_id]

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        if rollouts.entropies is None:
            raise ValueError("reward.ares_entropy needs per-token entropies (signal 'entropy'), but rollouts.entropies "
                             "is None")
        H = rollouts.entropies.detach().double()
        mask = rollouts.mask if rollouts.mask is not None else (
            torch.arange(H.shape[1]).unsqueeze(0) < rollouts.lengths.unsqueeze(1))
        B, G = H.shape[0], rollouts.group_size
        rows, trig = [], []
        for i in range(B):
            keep = mask[i, : H.shape[1]].bool()
            rows.append(H[i, : keep.numel()][keep])
            ids = [t for t, k in zip(rollouts.completion_ids[i], keep.tolist()) if k]
            trig.append(torch.tensor([self.is_trigger(int(t)) for t in ids], dtype=torch.bool))
        sample_thresholds = torch.tensor([window_threshold(h, self.percentile, self.threshold_window)
                                          for h in rows], dtype=torch.float64)
        batch_threshold = float(torch.quantile(sample_thresholds, 0.5)) if B else 0.0  # = np.median
        theta = batch_threshold if self.threshold is None else self.threshold
        n = torch.tensor([float(trigger_window_count(h, t, theta, self.window)) for h, t in zip(rows, trig)],
                         dtype=torch.float64)
        self.threshold = batch_threshold if self.threshold is None else (
            self.threshold_ema * self.threshold + (1 - self.threshold_ema) * batch_threshold)
        acc = rollouts.correct.double().view(-1, G).mean(dim=1)
        group_n = n.view(-1, G).mean(dim=1)
        buckets = [ares_difficulty(float(a)) for a in acc]
        for b in ARES_BUCKETS:
            values = [float(x) for x, bb in zip(group_n, buckets) if bb == b]
            if not values:
                continue
            mean_n = sum(values) / len(values)
            self.target[b] = float(round(mean_n))
            step = mean_n - self.target[b] if b != "hard" else self.target[b] - mean_n
            self.alpha[b] = min(self.alpha_max, max(0.0, self.alpha[b] + self.alpha_lr * step))
        out = torch.tensor([
            ares_entropy_score(float(n[i]), self.target[buckets[i // G]], self.alpha[buckets[i // G]],
                               buckets[i // G], bool(rollouts.correct[i] > 0.5)) for i in range(B)])
        self._metrics = {"hwe_count": float(n.mean()) if B else 0.0, "threshold": float(theta),
                         **{f"alpha_{b}": self.alpha[b] for b in ARES_BUCKETS}}
        return out.float()

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "alpha": dict(self.alpha), "target": dict(self.target)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.threshold = state.get("threshold")
        self.alpha.update({k: float(v) for k, v in state.get("alpha", {}).items()})
        self.target.update({k: float(v) for k, v in state.get("target", {}).items()})

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
