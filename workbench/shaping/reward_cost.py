"""Cost reward terms: token $ cost (A^2FM "cost of pass", card 3), the A^2FM-style mode-choice term (card 3), the
Router-R1 cost reward (card 13a) and the SPEAR / ReTool tool-call reward (card 13b).

Prices are **$ per 1M tokens** everywhere (the unit of API price lists and of Router-R1's price table), so a conf
file reads like a price sheet; ``token_cost`` converts to $ per rollout.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import RewardTerm, register
from workbench.signals import PER_MILLION, rollout_cost, token_cost


@register
class CostTokens(RewardTerm):
    """Cost penalty: r = -$ per rollout (A^2FM / APO, Chen et al., arXiv 2510.12838), card 3.

    Without tools, $ = prompt_tokens * price_prompt + completion_tokens * price_completion (``token_cost``; prices
    in $ per 1M tokens). With tools (``rollouts.tool_cost`` set) it is the rollout's full $ (``rollout_cost``, the
    definition behind ``rollouts.cost`` and the ``cost/`` metrics): the prompt and the tool-result tokens read back
    at the prompt price, the model's own tokens (``lengths``) at the completion price, plus the $ of its tool calls.
    The tool-result tokens are the completion tokens outside ``lengths`` (``len(completion_ids) - lengths``).
    It is recomputed here rather than read off ``rollouts.cost`` so that ``price_prompt``/``price_completion``
    overrides apply to it too.

    With ``normalize`` (default) the cost is divided by the largest cost the rollout could have had, so the term lies
    in [-1, 0] whatever the prices; without it the term is raw $ (about 1e-5 per rollout at API prices), which only
    makes sense with a large weight. Worst case without tools: its prompt plus a full ``max_completion_length``
    completion. With tools the budget of ``max_completion_length`` tokens covers model and tool-result tokens
    together (TRL drops tool results that would overflow it), so each budget token is priced at the dearer of the
    two prices, and a tool budget is added: ``tool_budget`` $ if set, else (decision) the largest tool $ any rollout
    has spent so far in this run, kept as cross-step state (``state_dict``: ``{"tool_max": float}``) and raised
    before the batch is scored. Why a running maximum: tool prices differ by orders of magnitude (an expert call
    costs 20x a calculator call), and the batch maximum would rescale every step (a batch without an expert call
    would make one calculator call look as dear as the worst case); the running maximum only grows, settles once
    the dearest call pattern has been seen, and survives resumes. An explicit ``tool_budget`` smaller than a
    rollout's spend is clamped at -1. The prompt part is identical within a group, so under group normalisation
    only the completion and tool part moves the advantage; it is priced anyway so that the logged term is the
    real $.

    Decision on the [UNCONFIRMED] A^2FM reward: this is the plain cost penalty their "cost of pass" metric implies;
    the mode choice conditioned on the cheaper modes' accuracy is ``mode_cost``. Default prices are illustrative
    (a small hosted model, $0.15 / $0.60 per 1M tokens): set your deployment's.

    >>> r = Rollouts(["x"] * 2, [[1] * 4, [1] * 10], torch.tensor([4, 4]), torch.tensor([10, 10]),
    ...              torch.zeros(2, dtype=torch.bool), torch.ones(2), 2, [0] * 2, 20,
    ...              tool_cost=torch.tensor([0.0, 2e-5]))  # rollout 1 read 6 tool-result tokens, paid $2e-5
    >>> term = CostTokens(price_prompt=1.0, price_completion=2.0)  # $ 18e-6, 44e-6; worst 10 + 20 x 2 (e-6) + 2e-5
    >>> [round(x, 4) for x in term(r).tolist()]
    [-0.2571, -0.6286]
    """

    name = "cost_tokens"
    needs = frozenset({"lengths"})

    def __init__(
        self,
        weight: float = 1.0,
        price_prompt: float | None = None,
        price_completion: float | None = None,
        normalize: bool = True,
        tool_budget: float | None = None,
    ):
        super().__init__(weight)
        if (price_prompt is not None and price_prompt < 0) or (price_completion is not None and price_completion < 0):
            raise ValueError(f"prices must be >= 0, got {price_prompt}, {price_completion}")
        if tool_budget is not None and tool_budget < 0:
            raise ValueError(f"tool_budget must be >= 0 (or null), got {tool_budget}")
        # None: use the run's price table (rollouts.price_*), so the reward and the cost/ metrics agree
        self.price_prompt = None if price_prompt is None else float(price_prompt)
        self.price_completion = None if price_completion is None else float(price_completion)
        self.normalize = bool(normalize)
        self.tool_budget = None if tool_budget is None else float(tool_budget)
        self.tool_max = 0.0  # largest tool $ of one rollout seen so far (the tool budget when tool_budget is None)
        self._metrics: dict[str, float] = {}

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        pp = rollouts.price_prompt if self.price_prompt is None else self.price_prompt
        pc = rollouts.price_completion if self.price_completion is None else self.price_completion
        budget = torch.full_like(rollouts.lengths, rollouts.max_completion_length)
        if rollouts.tool_cost is None:
            cost = token_cost(rollouts.prompt_lengths, rollouts.lengths, pp, pc)
            worst = token_cost(rollouts.prompt_lengths, budget, pp, pc)
        else:
            total = torch.tensor([len(ids) for ids in rollouts.completion_ids], dtype=torch.long)
            context = (total - rollouts.lengths).clamp(min=0)  # tool-result tokens
            tool = rollouts.tool_cost.double()
            cost = rollout_cost(rollouts.prompt_lengths, rollouts.lengths, context, tool, pp, pc).float()
            if tool.numel():
                self.tool_max = max(self.tool_max, float(tool.max()))
            tool_budget = self.tool_max if self.tool_budget is None else self.tool_budget
            worst = token_cost(rollouts.prompt_lengths, budget, pp, max(pp, pc)) + tool_budget
        self._metrics = {"dollars": float(cost.mean()) if cost.numel() else 0.0}
        if not self.normalize:
            return -cost
        return torch.where(worst > 0, (-cost / worst.clamp(min=1e-30)).clamp(min=-1.0), torch.zeros_like(cost))

    def state_dict(self) -> dict[str, Any]:
        return {"tool_max": self.tool_max}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tool_max = float(state.get("tool_max", 0.0))

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


# ----------------------------------------------------------------------------------------------- A^2FM modes


def mode_penalty(ranks: torch.Tensor, correct: torch.Tensor, group_size: int, num_modes: int) -> torch.Tensor:
    """p_i = c_i * max over modes m cheaper than rollout i's of acc_g(m), the accuracy of the rollouts of i's group
    that chose m; modes nobody in the group chose are skipped, and p_i = 0 when no cheaper mode was tried. (B,) in
    [0, 1]. ``ranks``: each rollout's mode as its position in the task's modes (cheapest first), -1 for none (such
    a rollout is neither penalised nor counted as evidence).

    >>> ranks = torch.tensor([0, 0, 2, 2, 0, 1, 2, 2])  # instant x2, agentic x2 | instant, reasoning, agentic x2
    >>> correct = torch.tensor([1., 0., 1., 0., 0., 1., 1., 1.])
    >>> mode_penalty(ranks, correct, 4, 3).tolist()  # group 2: the reasoning rollout solved it, instant did not
    [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0, 1.0]
    """
    if num_modes < 1 or ranks.numel() == 0:
        return torch.zeros(ranks.shape, dtype=torch.float32)
    R = ranks.long().view(-1, group_size)  # (n, G)
    C = correct.float().view(-1, group_size)
    modes = torch.arange(num_modes)
    chose = (R.unsqueeze(-1) == modes).float()  # (n, G, M); an untagged rollout chose none
    count = chose.sum(dim=1)  # (n, M)
    acc = (chose * C.unsqueeze(-1)).sum(dim=1) / count.clamp(min=1.0)  # (n, M)
    evidence = (modes < R.unsqueeze(-1)) & (count > 0).unsqueeze(1)  # (n, G, M): cheaper and tried
    best = torch.where(evidence, acc.unsqueeze(1), torch.zeros(())).amax(dim=-1)  # (n, G)
    return (C * best).reshape(-1)


@register
class ModeCost(RewardTerm):
    """A^2FM-style mode choice (A^2FM / APO, Chen et al., arXiv 2510.12838), card 3: favour the cheapest mode that
    solves the problem, with the group accuracy of the cheaper modes as the difficulty signal.

    The task lets each completion open with a mode tag (``rollouts.modes``, names in ``rollouts.mode_names``,
    cheapest first: instant, reasoning, agentic for ``mixed_arithmetic``). For rollout i of group g with mode m_i
    and correctness c_i, acc_g(m) = accuracy of the rollouts of g that chose m, and

        r_i = -c_i * max_{m cheaper than m_i, tried in g} acc_g(m)     (0 when no cheaper mode was tried)

    so a correct answer in a dear mode loses up to ``weight`` when a cheaper mode solved the same problem in this
    group, and nothing on a problem the cheaper modes failed (a hard one).

    Decision on the [UNCONFIRMED] APO reward (its code was not released; the README only says it uses "the accuracy
    rate in inter-group rollouts" as the difficulty of the problem). Why this form:
    * Penalty on correct dear answers only. Wrong answers get 0 whatever their mode: correctness already ranks them
      below every right answer, and the dear mode's extra $ is ``cost_tokens``' business. With weight w below the
      correctness weight, a correct dear answer (>= 1 - w) still beats a wrong one (0).
    * The cheaper modes' accuracy scales the penalty, so the pressure matches the evidence: if the dear mode is
      always right and a cheaper mode right with probability a, the cheaper mode has the higher expected reward
      iff a > 1 - w a, i.e. a > 1 / (1 + w) (2/3 at w = 0.5, 1/2 at w = 1). On easy problems the model learns
      to answer at once, on hard ones it keeps the tool.
    * The max over all cheaper modes, not instant alone: reasoning that solved what the agentic mode also solved
      counts too, and a correct reasoning answer is penalised by instant's accuracy the same way.
    * Modes nobody in the group chose carry no evidence (skipped, not counted as 0 or 1). acc_g is a plain group
      frequency, so with few rollouts in a cheap mode it is noisy (one lucky instant answer out of one gives the
      full penalty); the noise averages out over problems and steps. Limitation: once the policy stops trying a
      cheap mode, no group holds evidence for it and the pressure stops; APO forces rollouts in every mode for
      this reason, which a reward term cannot do. Watch the trainer's ``modes/<mode>`` shares.
    * No bonus on correct cheap answers: group normalisation sees only differences inside a group, which the
      penalty on the dear answers already makes; the term stays <= 0 and needs no scale of its own.

    A rollout without a valid tag (decision): it scores ``untagged`` (default -1, the largest penalty a tagged
    rollout can get), right or wrong, and is no evidence for any mode, so dropping the tag never pays; with
    ``untagged: null`` it counts as the dearest mode instead (penalised like an agentic answer). A task without
    modes (``mode_names`` empty) gives 0 everywhere. Metrics: ``penalty`` (mean of -r over rollouts) and
    ``penalised`` (share of rollouts with r < 0); the mode shares are the trainer's ``modes/*`` metrics.

    >>> r = Rollouts(["x"] * 5, [[1]] * 5, torch.ones(5, dtype=torch.long), torch.ones(5, dtype=torch.long),
    ...              torch.zeros(5, dtype=torch.bool), torch.tensor([1., 1., 1., 0., 1.]), 5, [0] * 5, 8,
    ...              modes=["instant", "instant", "agentic", "agentic", None],
    ...              mode_names=("instant", "reasoning", "agentic"))
    >>> ModeCost()(r).tolist()  # instant solved it: agentic right -1, agentic wrong 0, untagged -1
    [0.0, 0.0, -1.0, 0.0, -1.0]
    """

    name = "mode_cost"
    needs = frozenset({"modes", "correct"})

    def __init__(self, weight: float = 1.0, untagged: float | None = -1.0):
        super().__init__(weight)
        if untagged is not None and untagged > 0:
            raise ValueError(f"untagged must be <= 0 (a penalty) or null, got {untagged}")
        self.untagged = None if untagged is None else float(untagged)
        self._metrics: dict[str, float] = {}

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        names = tuple(rollouts.mode_names)
        B = len(rollouts.completions)
        if not names:
            self._metrics = {"penalty": 0.0, "penalised": 0.0}
            return torch.zeros(B)
        if rollouts.modes is None:
            raise ValueError("reward.mode_cost needs rollouts.modes (signal 'modes'), but it is None")
        rank = {m: k for k, m in enumerate(names)}
        ranks = torch.tensor([rank.get(m, -1) if m is not None else -1 for m in rollouts.modes], dtype=torch.long)
        untagged = ranks < 0
        if self.untagged is None:
            ranks = torch.where(untagged, torch.full_like(ranks, len(names) - 1), ranks)
        r = torch.zeros(B) - mode_penalty(ranks, rollouts.correct, rollouts.group_size, len(names))  # +0, not -0
        if self.untagged is not None:
            r = torch.where(untagged, torch.full_like(r, self.untagged), r)
        self._metrics = {
            "penalty": float(-r.mean()) if r.numel() else 0.0,
            "penalised": float((r < 0).float().mean()) if r.numel() else 0.0,
        }
        return r

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
    With real tool use (``rollouts.turns`` set) the retool variant counts as the reference does, in turns:
    k = turns - 1, the assistant turns that got tool results back (TRL's loop opens a new assistant turn after each
    round of tool results). Without turns it falls back to n = tool calls (equal when each turn makes one call).
    A rollout cut off right after a tool response has num_turns = 2k + 1 in the reference (bonus 0.1 k - 0.05);
    here it is 0.1 k.

    Counts for ``variant="spear"`` (and the retool fallback) come from ``rollouts.tool_calls``: the calls the tool
    environments really ran when tools are on (``task.tools``; a call per tool invocation, several per turn
    possible; SPEAR's card counts n_tool calls). When that is None (plain generation without tools), the term
    counts occurrences of ``pattern`` (default ``"<tool_call>"``, the Qwen/Hermes tool-call tag) in the completion
    text (decision: a text fallback keeps the term usable and testable without a tool environment). Defaults are
    SPEAR's: coef 0.1, cap 1, T = 200 steps, cosine schedule.

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
        if self.variant == "retool" and rollouts.turns is not None:  # tool-calling turns, as the reference counts
            return (rollouts.turns.float() - 1.0).clamp(min=0.0)
        if rollouts.tool_calls is not None:
            return rollouts.tool_calls.float()
        return torch.tensor([float(text.count(self.pattern)) for text in rollouts.completions])

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        n = self.counts(rollouts)
        s = tool_call_schedule(rollouts.step, self.horizon, self.schedule)
        r = (self.coef * n).clamp(max=self.cap)  # both variants: coef per count (ReTool's (2k+2 - 2)/2 * 0.1 = 0.1 k)
        if self.variant == "retool":
            r = torch.where(rollouts.correct > 0.5, torch.zeros_like(r), r)
        self._metrics = {"schedule": s, "calls": float(n.mean()) if n.numel() else 0.0}
        return r * s

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
