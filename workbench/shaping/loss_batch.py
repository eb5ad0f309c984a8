"""The loss-side batch: what a regularizer's hooks see of one training micro-batch.

TRL's training forward pass produces per-token log-probs and entropies; the adapter (`workbench.trainers`) packs
them, with the advantages and the layout of the batch, into one `LossBatch` and hands it to every regularizer's
`token_advantages(batch)` and `loss(batch)`. A new loss-side method that needs more than the fields every batch
has adds an **optional field** here (a row in `OPTIONAL_FIELDS` and the adapter code that fills it), lists it in
its `fields`, and the adapter fills it only when an active term lists it: no hook signature changes.

Always present (B = rollouts in the micro-batch, T = its padded completion width):

* `logps` (B, T), with grad: log-probs of the sampled tokens under the current policy at the rollout temperature;
* `old_logps` (B, T), detached: under the sampling policy (TRL's `old_per_token_logps`, or `logps` detached when
  TRL does not keep them: on-policy);
* `advantages` (B, T): TRL's advantages expanded per token, after the earlier token hooks in config order;
* `mask` (B, T) float: the tokens TRL's loss counts (completion through EOS, tool results out);
* `entropies` (B, T), with grad: full-vocabulary entropy of each next-token distribution (TRL's fused LM head);
* `completion_ids` (B, T) long;
* `group_size` G, and `rollout_index` (B,) long: each row's index in the whole (gathered) generation batch, so
  `group_ids = rollout_index // G` tells which rows share a prompt (TRL shuffles rollouts across micro-batches, so
  a group is whole in one loss call only when the micro-batch is the whole generation batch);
* `correct` (B,) float and `rewards` (B,) float: the task's correctness and the shaped (weighted) reward of each row;
* `max_completion_length`: the run's generation budget (TRL pads a micro-batch only to its longest completion).

Optional (`OPTIONAL_FIELDS`; None unless an active term lists the name in its `fields`):

* `logits` (B, T, V), with grad: the temperature-scaled next-token logits at the completion positions. TRL's fused
  LM head never materialises them; the adapter projects the hidden states of TRL's own forward pass through the
  LM head once more (no extra pass through the network). Derived quantities are methods that cache their result:
  `top_p_entropy(p, k)` (SIREN's nucleus entropy).
* `ref_logps` (B, T), detached: log-probs of the sampled tokens under TRL's reference model (TRL's
  `ref_per_token_logps`, which it computes only when its `beta > 0`: a term listing this field sets `beta` in its
  `trl_args`, and the adapter raises if TRL computed none).
* `group_accuracy` (B,) float: the share of correct rollouts in each row's prompt group, taken over the whole group
  at generation time and carried with the row through TRL's shuffle (right in any micro-batch split).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

#: Optional LossBatch fields, by the name a term lists in `fields` -> what it holds.
OPTIONAL_FIELDS: dict[str, str] = {
    "logits": "(B, T, V) temperature-scaled next-token logits at the completion positions, with grad",
    "ref_logps": "(B, T) log-probs of the sampled tokens under TRL's reference model (needs TRL's beta > 0)",
    "group_accuracy": "(B,) the share of correct rollouts in each row's prompt group",
}


@dataclass
class LossBatch:
    logps: torch.Tensor
    old_logps: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    entropies: torch.Tensor | None = None
    completion_ids: torch.Tensor | None = None
    group_size: int = 1
    rollout_index: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    step: int = 0
    max_completion_length: int | None = None  # the run's generation budget (TRL pads to the batch's longest)
    logits: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    group_accuracy: torch.Tensor | None = None
    _cache: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, logps, old_logps, advantages, mask, entropies=None, **fields) -> "LossBatch":
        """A batch from the four tensors every loss hook reads (tests and hand-made inputs). 1-D advantages are
        expanded per token."""
        if advantages is not None and logps is not None and advantages.dim() == 1:
            advantages = advantages.unsqueeze(1).expand_as(logps)
        return cls(logps=logps, old_logps=old_logps, advantages=advantages, mask=mask, entropies=entropies, **fields)

    @property
    def group_ids(self) -> torch.Tensor | None:
        """(B,) long: which prompt group each row belongs to, or None when the layout is unknown."""
        return None if self.rollout_index is None else self.rollout_index // self.group_size

    def require(self, name: str, who: str) -> torch.Tensor:
        """The optional field `name`, or a clear error naming the term that needed it."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"{who} needs the loss batch's '{name}' field ({OPTIONAL_FIELDS.get(name, name)}); "
                             f"list it in the term's `fields`")
        return value

    def top_p_entropy(self, p: float, k: int = 10000, who: str = "top_p_entropy") -> torch.Tensor:
        """(B, T), with grad: entropy of each position's renormalised top-p nucleus of the top-k logits
        (`top_p_entropy`), cached per (p, k) for the terms sharing this batch."""
        key = ("top_p_entropy", float(p), int(k))
        if key not in self._cache:
            self._cache[key] = top_p_entropy(self.require("logits", who), p=p, k=k)
        return self._cache[key]


def top_p_entropy(logits: torch.Tensor, p: float = 0.8, k: int = 10000, chunk_size: int = 1024) -> torch.Tensor:
    """Entropy of the renormalised top-p nucleus of each position's distribution, (...,) from logits (..., V).

    Per position: probabilities over the full vocabulary, the ``k`` largest, and the nucleus = the smallest prefix
    (by descending probability) whose mass reaches ``p`` (the token that crosses p is included, so the nucleus is
    never empty). The nucleus is renormalised and its entropy returned; differentiable through the kept
    probabilities (the nucleus choice itself is not). Rows are processed ``chunk_size`` at a time because the
    sorted top-k is (rows, k) floats.

    >>> probs = torch.tensor([[0.6, 0.3, 0.1]])
    >>> round(float(top_p_entropy(probs.log(), p=0.8)), 4)  # nucleus {0.6, 0.3} -> (2/3, 1/3)
    0.6365
    >>> round(float(top_p_entropy(probs.log(), p=1.0)), 4)  # whole distribution
    0.8979
    """
    shape = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    k = min(int(k), flat.shape[-1])
    out = []
    for start in range(0, flat.shape[0], chunk_size):
        logp = torch.log_softmax(flat[start : start + chunk_size].float(), dim=-1)
        top_logp = torch.topk(logp, k, dim=-1).values  # sorted, descending
        top_p_ = top_logp.exp()
        mass_before = torch.cumsum(top_p_, dim=-1) - top_p_
        keep = (mass_before < p).detach()
        keep[:, 0] = True  # the most likely token is always in the nucleus (p = 0 gives entropy 0, not NaN)
        kept = top_p_ * keep
        z = kept.sum(dim=-1, keepdim=True)
        q_log = torch.where(keep, top_logp - z.log(), torch.zeros_like(top_logp))
        out.append(-(kept / z * q_log).sum(dim=-1))
    if not out:
        return flat.new_zeros(shape)
    return torch.cat(out).reshape(shape)
