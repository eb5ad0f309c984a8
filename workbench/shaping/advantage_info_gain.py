"""IGPO's information-gain advantage (card G2-16): dense per-turn rewards from the policy's own belief in the true
answer, turned into per-token returns with a group baseline at each position.

Wang et al., "Information Gain-based Policy Optimization" (arXiv 2510.14967); GuoqingWang1/IGPO
(`scrl/llm_agent/generation.py::run_llm_loop` for the gain, `verl/utils/reward_score/info_gain.py::compute_score` for
its placement, `verl/trainer/ppo/core_algos.py::compute_grpo_outcome_advantage` for the advantage). The per-turn
probabilities come from the trainer's no-grad pass (`workbench.info_gain`); this module places and turns them into
advantages.
"""

from __future__ import annotations

from typing import Sequence

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.advantage import turn_spans
from workbench.shaping.base import AdvantageTransform, register

#: What the final turn's reward is: the run's shaped reward (what TRL normalises) or the task's 0/1 correctness.
OUTCOMES = ("reward", "correct")


def turn_rewards(spans: Sequence[Sequence[tuple[int, int]]], probs: Sequence[Sequence[float]],
                 outcome: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) dense rewards: for a rollout with turns 0..K-1 (`spans`, [start, end) positions) and per-turn
    answer probabilities p_0..p_{K-1} (`probs`; K >= 2), turn t < K-1 gets the gain p_{t+1} - p_t on its last token
    and the final turn gets ``outcome`` on its last token. A one-turn rollout gets only the outcome; an empty one
    nothing. A probed rollout whose probabilities do not match its turns is an error (pass and placement disagree).

    >>> r = turn_rewards([[(0, 2), (4, 6)], [(0, 3)]], [[0.2, 0.9], []], torch.tensor([1.0, 0.0]), 6)
    >>> [[round(x, 3) for x in row] for row in r.tolist()]
    [[0.0, 0.7, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    out = torch.zeros(len(spans), width, dtype=torch.float64)
    for i, turns in enumerate(spans):
        if not turns:
            continue
        p = list(probs[i]) if i < len(probs) else []
        if len(turns) >= 2:
            if len(p) != len(turns):
                raise ValueError(f"igpo_info_gain: rollout {i} has {len(turns)} turns but {len(p)} answer "
                                 "probabilities from the information-gain pass")
            for t in range(len(turns) - 1):
                out[i, turns[t][1] - 1] += p[t + 1] - p[t]
        out[i, turns[-1][1] - 1] += float(outcome[i])
    return out


def return_to_go_advantages(rewards: torch.Tensor, valid: torch.Tensor, group_size: int) -> torch.Tensor:
    """IGPO's advantage as released: R_{i,t} = sum_{s >= t} r_{i,s} (gamma 1, over each completion's positions,
    ``valid`` (B, T) contiguous from the left) and A_{i,t} = (R_{i,t} - mean_j R_{j,t}) * valid_{i,t}, the mean
    over the rollout's group (contiguous blocks of ``group_size``) at the same position, zeros past a rollout's end
    included; the group std is computed by the authors but not applied, so not here either.

    >>> A = return_to_go_advantages(torch.tensor([[0.0, 1.0], [0.5, 0.0]]), torch.ones(2, 2), 2)
    >>> A.tolist()
    [[0.25, 0.5], [-0.25, -0.5]]
    """
    valid = valid.to(rewards.dtype)
    r = rewards * valid
    returns = torch.flip(torch.cumsum(torch.flip(r, [1]), 1), [1]) * valid
    B, T = returns.shape
    baseline = returns.view(-1, group_size, T).mean(dim=1, keepdim=True).expand(-1, group_size, T).reshape(B, T)
    return (returns - baseline) * valid


@register
class IGPOInfoGain(AdvantageTransform):
    """IGPO (arXiv 2510.14967, card G2-16): A_{i,t} = R_{i,t} - mean_{j in group} R_{j,t}, R the return-to-go (gamma 1)
    of the dense rewards r: the information gain p_{k+1} - p_k on the last model token of each non-final assistant
    turn k, the outcome on the last token of the final turn. p_k = exp(mean log pi(answer tokens)) with the true
    answer teacher-forced after the context that turn k started from (`workbench.info_gain`: the trainer's no-grad
    pass, batched, through TRL's own log-prob function).

    Defaults as released: gamma 1, the group mean at each position, no std (`return_to_go_advantages`).

    Decisions (the card is silent or the task differs):

    * The pseudo-answer. The authors append "\\nNow there's enough information to answer\\n</think>\\n<answer>\\n{gt}"
      (only gt scored) to a context that ends inside a think block. Here the pseudo-answer is written as the task
      writes an answer at that point: before the first turn (the prior p_0) the cheapest mode's tag then the answer
      (mixed_arithmetic: ``[instant]29842``: "answer at once", the task's `Task.modes` tag, option ``prior_lead``),
      after a tool result the bare answer (the task's final turn; option ``lead``, default ""); only the answer's
      tokens are scored. Measured on the warm-started tiny model (60 held-out problems, after a correct calculator
      result): with the bare answer at p_0 too, p_0 ~ 0.002 on every problem (the model expects a mode tag there) and
      every tool call looks worth +1.0; with ``[instant]`` at p_0 the gain is 0.29 on easy problems and 0.80 on hard
      ones; ``[instant]`` at every turn makes p_1 ~ 0 after a tool result (a tag there is off-format).
    * The outcome is the run's shaped reward (``outcome=reward``: with ``reward=[correctness]`` the task's 0/1
      correctness, which replaces the authors' F1; their -2 for unbalanced answer tags has no counterpart in a task
      without answer tags: add a format reward term for that) or the bare correctness (``outcome=correct``).
    * This replaces TRL's advantage (put it first among advantage transforms); ``algo.scale_rewards`` then has no
      effect on the policy gradient.

    Deliberate differences: the gain sits on the last **model** token of the turn (the authors' on the last token
    of the turn's chunk, which ends with the tool response); the returns at model tokens are the same, only the
    baseline at positions where a group-mate has a tool-result token differs. Returns flow across tool-result
    tokens as in the authors' code (their response mask covers the tool response), but those tokens carry no loss
    (TRL's ``tool_mask``), where the authors' loss trains on them. One-turn rollouts are not probed (their p_0 would
    be unused). The log-probs use the rollout temperature, as TRL's loss does.
    """

    name = "igpo_info_gain"
    info_gain_pass = True  # workbench.info_gain.wants_info_gain: the trainer runs the pass for this term
    requires_tools = True  # per-turn gains: without tool calls every rollout is one turn (the outcome return only)

    def __init__(self, lead: str = "", prior_lead: str | None = None, outcome: str = "reward"):
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome={outcome!r}; choose from: {', '.join(OUTCOMES)}")
        self.lead = str(lead)
        self.prior_lead = None if prior_lead is None else str(prior_lead)
        self.outcome = outcome
        self._metrics: dict[str, float] = {}

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        if rollouts.mask is None:
            raise ValueError("advantage=igpo_info_gain needs the rollouts' completion mask (Rollouts.mask)")
        spans = turn_spans(rollouts.mask)
        probs = getattr(rollouts, "turn_probs", None)
        if probs is None and all(len(turns) < 2 for turns in spans):
            probs = [[] for _ in spans]  # no multi-turn rollout: the pass would probe nothing
        if probs is None:
            raise ValueError("advantage=igpo_info_gain needs each rollout's per-turn answer probabilities "
                             "(Rollouts.turn_probs), which the trainer's information-gain pass fills "
                             "(workbench.info_gain.InfoGainMixin); this trainer did not run it")
        outcome = rewards if self.outcome == "reward" else rollouts.correct
        width = rollouts.mask.size(1)
        r = turn_rewards(spans, probs, outcome.double(), width)
        valid = torch.zeros(len(spans), width, dtype=torch.float64)
        for i, ids in enumerate(rollouts.completion_ids):
            valid[i, : len(ids)] = 1.0
        out = return_to_go_advantages(r, valid, rollouts.group_size)
        probed = [p for p in probs if p]
        gains = [b - a for p in probed for a, b in zip(p[:-1], p[1:])]
        self._metrics = {
            "probed_frac": len(probed) / max(1, len(spans)),
            "passes": float(sum(len(p) for p in probs)),
            "prior_mean": sum(p[0] for p in probed) / len(probed) if probed else 0.0,
            "gain_mean": sum(gains) / len(gains) if gains else 0.0,
        }
        return out.to(advantages.dtype)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
