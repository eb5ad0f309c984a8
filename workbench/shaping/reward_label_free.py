"""Label-free reward terms: EMPO's semantic answer agreement (card 17). No ground truth and no reward model: a
rollout is rewarded for agreeing with the rest of its group."""

from __future__ import annotations

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import RewardTerm, register


def normalize_answer(answer: str | None) -> str:
    """The answer as compared for equivalence: stripped, inner whitespace collapsed; None -> "" (empty).

    >>> normalize_answer("  12  "), normalize_answer("a   b"), normalize_answer(None)
    ('12', 'a b', '')
    """
    return " ".join(str(answer).split()) if answer is not None else ""


def answer_clusters(answers: list[str]) -> list[int]:
    """A class id per answer, numbered by first appearance: equal (normalised) answers share a class; every empty
    answer is a class of its own.

    >>> answer_clusters(["1", "2", "1", "", "", "2"])
    [0, 1, 0, 2, 3, 1]
    """
    ids: dict[str, int] = {}
    out = []
    n_classes = 0
    for a in answers:
        if a == "" or a not in ids:
            if a != "":
                ids[a] = n_classes
            out.append(n_classes)
            n_classes += 1
        else:
            out.append(ids[a])
    return out


def empo_rewards(answers: list[str | None], group_size: int, empty_reward: float = 0.0,
                 all_distinct_zero: bool = True, min_share: float = 0.0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,) EMPO rewards, and per group the semantic entropy of its answers and its largest class's share.

    Per group: p_c = share of the group in class c, r_i = p_{c(i)}; an empty answer gets `empty_reward`; with
    `all_distinct_zero` a group whose answers all sit in different classes (entropy = log G, G > 1) gets 0 for
    its non-empty answers (the TRL maths recipe); a group whose largest class holds under `min_share` of it gets 0
    for its non-empty answers (the free-form recipe uses 0.2).

    >>> r, h, top = empo_rewards(["7", "7", "3", None], 4)
    >>> [round(x, 4) for x in r.tolist()], [round(x, 4) for x in h.tolist()], top.tolist()
    ([0.5, 0.5, 0.25, 0.0], [1.0397], [0.5])
    >>> empo_rewards(["1", "2"], 2)[0].tolist()  # all distinct: no agreement, no reward
    [0.0, 0.0]
    """
    B = len(answers)
    rewards = torch.zeros(B, dtype=torch.float64)
    entropies, tops = [], []
    for start in range(0, B, group_size):
        group = [normalize_answer(a) for a in answers[start : start + group_size]]
        ids = answer_clusters(group)
        n = len(ids)
        p = torch.bincount(torch.tensor(ids)).double() / n
        entropy = float(-(p * p.log()).sum())
        entropies.append(entropy)
        tops.append(float(p.max()))
        silenced = (all_distinct_zero and n > 1 and len(p) == n) or (float(p.max()) < min_share and len(p) > 1)
        for j, (a, c) in enumerate(zip(group, ids)):
            rewards[start + j] = empty_reward if a == "" else 0.0 if silenced else float(p[c])
    return rewards.float(), torch.tensor(entropies), torch.tensor(tops)


@register
class EMPOAgreement(RewardTerm):
    """EMPO, Entropy Minimized Policy Optimization (Zhang et al., "Right Question is Already Half the Answer: Fully
    Unsupervised LLM Reasoning Incentivization", arXiv 2504.05812; github.com/QingyangZhang/EMPO,
    `src/open_r1/rewards.py::get_empo_math_reward` / `get_empo_common_reward`), card 17.

    Label-free: the group's G extracted answers (signal `answers`, the task's `extract_answer`) are clustered into
    semantic classes, and rollout i gets r_i = p_{c(i)}, the share of the group in its answer's class. Maximising it
    lowers the semantic entropy -sum_c p_c log p_c of the group's answers; no ground truth is read. Use it in place
    of `correctness` (reward=[empo_agreement]); `train/accuracy` still reports the task's correctness.

    Defaults follow the TRL maths recipe: an empty answer (none extracted) is its own class and gets
    `empty_reward` 0; `all_distinct_zero`: a group whose answers are all different (entropy = log G) gets 0.
    `min_share` 0 (the free-form recipe's 0.2: no reward when the largest class holds under 20% of the group;
    its -0.5 for an empty answer is `empty_reward=-0.5`).
    Decisions: "all different" is counted (G classes of one), where the recipe compares the float entropy with
    log G, which rounding lets through at G = 7 (-7 (1/7) log(1/7) < log 7 in float64: the group got 1/7 each).
    Equivalence is exact match of the normalised answer string (stripped, whitespace collapsed), the
    simple case of the authors' `math_verify` test; the free-form recipe's verifier model and its ROUGE-L
    "restates the question" rule are not built (no verifier model here). The veRL version has no all-distinct
    threshold (`all_distinct_zero=false`) and gives an empty answer 1/n (`empty_reward=1/G`).
    """

    name = "empo_agreement"
    needs = frozenset({"answers"})

    def __init__(self, weight: float = 1.0, empty_reward: float = 0.0, all_distinct_zero: bool = True,
                 min_share: float = 0.0):
        super().__init__(weight)
        if not 0.0 <= min_share <= 1.0:
            raise ValueError(f"min_share must be in [0, 1], got {min_share}")
        self.empty_reward = float(empty_reward)
        self.all_distinct_zero = bool(all_distinct_zero)
        self.min_share = float(min_share)
        self._metrics: dict[str, float] = {}

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        if rollouts.answers is None:
            raise ValueError("reward.empo_agreement needs extracted answers (signal 'answers'), but rollouts.answers "
                             "is None")
        r, h, top = empo_rewards(rollouts.answers, rollouts.group_size, self.empty_reward, self.all_distinct_zero,
                                 self.min_share)
        self._metrics = {"semantic_entropy": float(h.mean()) if h.numel() else 0.0,
                         "majority_share": float(top.mean()) if top.numel() else 0.0}
        return r

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
