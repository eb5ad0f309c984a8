"""Cost reward terms: token $ cost (A^2FM "cost of pass", card 3), the Router-R1 cost reward (card 13a) and the
SPEAR / ReTool tool-call reward (card 13b).

Prices are **$ per 1M tokens** everywhere (the unit of API price lists and of Router-R1's price table), so a conf
file reads like a price sheet; ``token_cost`` converts to $ per rollout.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from workbench.shaping.base import RewardTerm, Rollouts, register
from workbench.signals import PER_MILLION, token_cost


@register
class CostTokens(RewardTerm):
    """Token-cost penalty: r = -$ per rollout (A^2FM / APO, Chen et al., arXiv 2510.12838), card 3.

    $ = prompt_tokens * price_prompt + completion_tokens * price_completion (``token_cost``; prices in $ per 1M
    tokens). With ``normalize`` (default) the cost is divided by the largest cost the rollout could have had
    (its prompt plus a full ``max_completion_length`` completion), so the term lies in [-1, 0] whatever the prices;
    without it the term is raw $ (about 1e-5 per rollout at API prices), which only makes sense with a large weight.
    The prompt part is identical within a group, so under group normalisation only the completion part moves the
    advantage; it is priced anyway so that the logged term is the real $.

    Decision on the [UNCONFIRMED] A^2FM reward: their APO term (mode choice conditioned on instant-mode accuracy)
    was not released; this is the plain cost penalty their "cost of pass" metric implies. Default prices are
    illustrative (a small hosted model, $0.15 / $0.60 per 1M tokens): set your deployment's.
    """

    name = "cost_tokens"
    needs = frozenset({"lengths"})

    def __init__(
        self,
        weight: float = 1.0,
        price_prompt: float | None = None,
        price_completion: float | None = None,
        normalize: bool = True,
    ):
        super().__init__(weight)
        if (price_prompt is not None and price_prompt < 0) or (price_completion is not None and price_completion < 0):
            raise ValueError(f"prices must be >= 0, got {price_prompt}, {price_completion}")
        # None: use the run's price table (rollouts.price_*), so the reward and the cost/ metrics agree
        self.price_prompt = None if price_prompt is None else float(price_prompt)
        self.price_completion = None if price_completion is None else float(price_completion)
        self.normalize = bool(normalize)
        self._metrics: dict[str, float] = {}

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        pp = rollouts.price_prompt if self.price_prompt is None else self.price_prompt
        pc = rollouts.price_completion if self.price_completion is None else self.price_completion
        cost = token_cost(rollouts.prompt_lengths, rollouts.lengths, pp, pc)
        self._metrics = {"dollars": float(cost.mean()) if cost.numel() else 0.0}
        if not self.normalize:
            return -cost
        budget = torch.full_like(rollouts.lengths, rollouts.max_completion_length)
        worst = token_cost(rollouts.prompt_lengths, budget, pp, pc)
        return torch.where(worst > 0, -cost / worst.clamp(min=1e-30), torch.zeros_like(cost))

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- Router-R1


def router_cost_score(transformed: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """r_cost = 1 - clip((c' - p5) / (p95 - p5), 0, 1) against a window of c' values; 0.5 when p95 <= p5.

    Returns (r_cost, p5, p95). Percentiles interpolate linearly (numpy's default).

    >>> r, lo, hi = router_cost_score(torch.tensor([0., 5., 10., 20.]), torch.arange(0., 101.))
    >>> [round(x, 4) for x in r.tolist()], lo, hi
    ([1.0, 1.0, 0.9444, 0.8333], 5.0, 95.0)
    """
    if window.numel() < 2:
        return torch.full_like(transformed, 0.5), float("nan"), float("nan")
    q = torch.quantile(window.double(), torch.tensor([0.05, 0.95], dtype=torch.float64))
    lo, hi = float(q[0]), float(q[1])
    if not hi > lo:
        return torch.full_like(transformed, 0.5), lo, hi
    r = 1.0 - ((transformed.double() - lo) / (hi - lo)).clamp(0.0, 1.0)
    return r.to(transformed.dtype), lo, hi


@register
class CostRouter(RewardTerm):
    """Router-R1 cost reward (Zhang et al., arXiv 2506.09033), card 13a. Reference: ulab-uiuc/Router-R1
    ``verl/trainer/main_ppo.py`` (``normalize_reward``, ``RewardManager.__call__``) and
    ``verl/utils/reward_score/qa_em.py`` (``compute_score_em``).

    c' = sqrt(c) (or log1p(0.01 c) with c in micro-$, i.e. tokens x $/1M price, Router-R1's unit); the batch's c'
    values join a rolling window of the last ``window`` values, and r_cost = 1 - clip((c' - p5)/(p95 - p5), 0, 1)
    with p5/p95 the window's percentiles (1 = among the cheapest, 0 = among the dearest, 0.5 when the window is
    degenerate). The term is r_cost on **correct** answers and 0 on wrong ones ("the cost term is added only for
    successful answers").

    How it composes with correctness (decision): Router-R1's full reward for a correct answer is
    (s + f)(1 - alpha) + alpha * r_cost. Correctness is a separate term here, so this term is the additive cost part
    and ``weight`` plays alpha: to reproduce Router-R1 exactly, give ``correctness`` weight 1 - alpha and this term
    weight alpha. Router-R1's default alpha is 0 (off) and its README suggests 0.9 for a cost-heavy trade-off; conf
    uses 0.5 on top of correctness weight 1, so a correct answer (1 .. 1.5) always beats a wrong one (0).
    The window holds the c' of all rollouts, right and wrong, so the scale reflects what the policy currently
    spends. Needs ``rollouts.cost`` in $ (the trainer fills it with ``token_cost`` or from tool-call logs).
    The window is cross-step state (``state_dict``: ``{"window": [floats]}``). In a multi-process run the trainer
    passes the gathered batch, so every rank keeps the same window.

    Deliberate difference (window order): the reference loops over the batch and scores rollout i right after
    appending it, against a window that holds the earlier batches plus rollouts 0..i of this one; here the whole
    batch joins the window first and every rollout is scored against the same window. Why: the reference's score
    depends on a rollout's position in the batch, so two rollouts of one group with the same cost can get different
    rewards (noise inside GRPO's group comparison), and the first batch is degenerate: rollout 0 always gets 0.5
    (a one-value window), and each later rollout that is the dearest so far gets 0, the cheapest so far 1 (costs
    1, 4, 9, 16 in that order score 0.5, 0, 0, 0 there and 1, 0.69, 0.31, 0 here). Once the window holds many
    earlier values (``window`` 1000 >> a batch) the two differ by the few percent a batch moves p5 and p95.
    Also: the reference returns 0.5 when p95 - p5 < 1e-8 (in its micro-$ units); here only when p95 <= p5.
    ``tests/test_shaping_cost.py`` computes the reference's numbers for both cases.
    """

    name = "cost_router"
    needs = frozenset({"cost", "correct"})

    def __init__(self, weight: float = 1.0, window: int = 1000, transform: str = "sqrt"):
        super().__init__(weight)
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        if transform not in ("sqrt", "log1p"):
            raise ValueError(f"transform must be 'sqrt' or 'log1p', got {transform!r}")
        self.window = int(window)
        self.transform = transform
        self.values: list[float] = []
        self._metrics: dict[str, float] = {}

    def transformed(self, cost: torch.Tensor) -> torch.Tensor:
        cost = cost.double().clamp(min=0.0)
        if self.transform == "sqrt":
            return cost.sqrt()
        return torch.log1p(0.01 * cost / PER_MILLION)  # Router-R1's log1p(0.01 c) with c in micro-$

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        if rollouts.cost is None:
            raise ValueError("reward.cost_router needs rollouts.cost (signal 'cost'), but it is None")
        c = self.transformed(rollouts.cost)
        self.values = (self.values + c.tolist())[-self.window :]
        r_cost, lo, hi = router_cost_score(c, torch.tensor(self.values, dtype=torch.float64))
        self._metrics = {"p5": lo, "p95": hi, "window": float(len(self.values))}
        return torch.where(rollouts.correct > 0.5, r_cost, torch.zeros_like(r_cost)).float()

    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = [float(v) for v in state.get("window", [])][-self.window :]

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- tool calls


def tool_call_schedule(step: int, horizon: int, schedule: str = "cosine") -> float:
    """SPEAR's decay of the tool-call reward: 0.5 (1 + cos(pi step / T)) for step <= T, else 0; 1 if constant.

    >>> [tool_call_schedule(s, 200) for s in (0, 100, 200, 201)]
    [1.0, 0.5, 0.0, 0.0]
    """
    if schedule == "constant":
        return 1.0
    if step > horizon:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * step / horizon))


@register
class ToolCalls(RewardTerm):
    """SPEAR tool-call reward (Qin et al., "Learn the Ropes, Then Trust the Wins", arXiv 2509.22601), card 13b, or
    the ReTool recipe's tool-call bonus.

    ``variant="spear"`` (default): r = min(cap, coef * n) * s(step) for every rollout, with n the number of tool
    calls and s = 0.5 (1 + cos(pi step/T)) for step <= T, else 0 (``schedule="constant"``: s = 1). It is an
    intrinsic bonus that teaches tool use early and fades out, so the outcome reward takes over. Reference:
    TencentYoutuResearch/SPEAR ``retool/recipe/retool/reward.py`` (``default_compute_score_enforce_toolcall_*``:
    +0.1 per tool-calling assistant message, capped at 1.0, times the cosine ratio over ``max_toolcall_steps``)
    and ``verl-agent/agent_system/reward_manager/episode.py``.

    ``variant="retool"``: wrong answers only, r = min(cap, coef * n), correct answers 0; the schedule still applies
    (the reference has none: ``schedule="constant"`` reproduces it).
    Reference: volcengine/verl ``recipe/retool/retool.py::compute_score`` (added in verl PR #2233, since moved to
    the verl-recipe repository): a wrong answer (math_dapo score -1) gets ``(num_turns - 2) / 2 * 0.1`` added,
    where ``num_turns = user_turns + assistant_turns + 1`` (``verl/experimental/agent_loop/tool_agent_loop.py``).
    With k tool-calling turns the agent loop makes k + 1 assistant turns and k tool-response turns, so
    num_turns = 2k + 2 and the bonus is 0.1 k: **0 with no tool call**, 0.1 with one, 0.3 with three. (The formula
    is in turns, not calls: applying it to the call count itself would give -0.1 with no tool call.) The reference
    then caps the wrong answer's total at 0 (PR #2233, i.e. bonus <= 1) or, since verl PR #3175, at -0.6 (bonus
    <= 0.4); ``cap`` plays that role. Here wrong answers score 0 under ``correctness``, so keep ``cap`` below the
    correctness weight (e.g. 0.4, the current reference) so that every wrong answer stays below every correct one.
    Deliberate difference: n counts tool calls; the reference counts tool-calling turns (equal when each turn makes
    one call). A rollout cut off right after a tool response has num_turns = 2k + 1 in the reference (bonus
    0.1 k - 0.05); here it is 0.1 k.

    Tool counts come from ``rollouts.tool_calls`` (filled by a tool-using trainer). When that is None (plain
    generation), the term counts occurrences of ``pattern`` (default ``"<tool_call>"``, the Qwen/Hermes tool-call
    tag) in the completion text (decision: a text fallback keeps the term usable and testable without a tool
    environment). Defaults are SPEAR's: coef 0.1, cap 1, T = 200 steps, cosine schedule.

    >>> r = Rollouts(["x"] * 3, [[1]] * 3, torch.tensor([1] * 3), torch.tensor([3] * 3),
    ...              torch.zeros(3, dtype=torch.bool), torch.tensor([0.0, 0.0, 1.0]), 3, [0] * 3, 8,
    ...              tool_calls=torch.tensor([0.0, 3.0, 3.0]))
    >>> [round(x, 4) for x in ToolCalls(variant="retool", schedule="constant")(r).tolist()]  # k = 0, 3 wrong; 3 right
    [0.0, 0.3, 0.0]
    """

    name = "tool_calls"
    needs = frozenset({"tool_calls", "correct"})

    def __init__(
        self,
        weight: float = 1.0,
        coef: float = 0.1,
        cap: float = 1.0,
        horizon: int = 200,
        schedule: str = "cosine",
        variant: str = "spear",
        pattern: str = "<tool_call>",
    ):
        super().__init__(weight)
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        if variant not in ("spear", "retool"):
            raise ValueError(f"variant must be 'spear' or 'retool', got {variant!r}")
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        if not pattern:
            raise ValueError("pattern must be a non-empty string")
        self.coef, self.cap, self.horizon = float(coef), float(cap), int(horizon)
        self.schedule, self.variant, self.pattern = schedule, variant, pattern
        self._metrics: dict[str, float] = {}

    def counts(self, rollouts: Rollouts) -> torch.Tensor:
        if rollouts.tool_calls is not None:
            return rollouts.tool_calls.float()
        return torch.tensor([float(text.count(self.pattern)) for text in rollouts.completions])

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        n = self.counts(rollouts)
        s = tool_call_schedule(rollouts.step, self.horizon, self.schedule)
        r = (self.coef * n).clamp(max=self.cap)  # both variants: coef per call (ReTool's (2k+2 - 2)/2 * 0.1 = 0.1 k)
        if self.variant == "retool":
            r = torch.where(rollouts.correct > 0.5, torch.zeros_like(r), r)
        self._metrics = {"schedule": s, "calls": float(n.mean()) if n.numel() else 0.0}
        return r * s

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
