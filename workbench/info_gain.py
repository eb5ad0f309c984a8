"""IGPO's information-gain pass (card G2-16): how sure the policy is of the true answer before each assistant turn.

For a multi-turn rollout with assistant turns 0..K-1 (K >= 2) and each t < K, a **probe** is the context the model
had when it started turn t (the prompt, then the completion's tokens up to the turn's first token: earlier turns
and the tool results read back), followed by a fixed **pseudo-answer** (`pseudo_answer_ids`: an unscored lead-in,
then the true answer). The policy teacher-forces it, without grad, and

    p_t = exp(mean over the answer's tokens of log pi(token | probe so far))

(t = 0 is the prior: the prompt alone, no turn yet). The gain of turn t < K-1 is p_{t+1} - p_t; the final turn
gets the outcome reward instead (`workbench.shaping.advantage_info_gain`, which places both and builds the returns).

Only rollouts with two or more turns are probed: a one-turn rollout has no gain to place (its only turn is the final
one), so its p_0 would go unused. Extra cost per step: sum over multi-turn rollouts of K forward passes of at most
(prompt + completion + pseudo-answer) tokens, batched (`ProbeBatch.tokens`); `rollout_probes` lists them.

Turn boundaries: `workbench.shaping.advantage.turn_spans`, from the completion's model-token mask (TRL's
`tool_mask`: 1 on the model's own tokens, 0 on the tool results it appends), through `segment_index(turns=True)`
beside it, the one definition of an agent turn (EMPG's steps use it too). The pass and the placement both call it.

The trainer side is `InfoGainMixin.info_gain_probs`: it runs the probes through TRL's own log-prob function
(`_get_per_token_logps_and_entropies`, the one TRL's loss uses: same temperature, same padding layout) and returns
each rollout's [p_0, ..., p_{K-1}] (empty for one-turn rollouts). A term asks for the pass by setting
``info_gain_pass = True`` (`wants_info_gain`); its options for the pseudo-answer are read from that term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from workbench.shaping.advantage import turn_spans

#: What the adapter passes as TRL's log-prob function: (input_ids, attention_mask, logits_to_keep) -> (N, keep).
LogpsFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def wants_info_gain(terms: Iterable[Any]) -> bool:
    """Whether any active term needs the per-turn answer probabilities (declares ``info_gain_pass = True``)."""
    return any(getattr(t, "info_gain_pass", False) for t in terms)


def info_gain_term(terms: Iterable[Any]) -> Any:
    """The active term that asked for the pass (its pseudo-answer options drive the probes)."""
    return next(t for t in terms if getattr(t, "info_gain_pass", False))


def mask_tensor(masks: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, T) float from ragged per-rollout 0/1 lists, zero-padded on the right."""
    T = max(1, max((len(m) for m in masks), default=0))
    out = torch.zeros(len(masks), T)
    for i, m in enumerate(masks):
        if len(m):
            out[i, : len(m)] = torch.tensor(list(m), dtype=torch.float32)
    return out


def pseudo_answer_ids(tokenizer: Any, answer: str, lead: str) -> tuple[list[int], list[int]]:
    """The pseudo-answer's token ids, (lead-in, answer), tokenized apart so the answer's span is exact (the authors
    tokenize the whole line and count the lead-in's tokens, which is the same where the boundary does not merge)."""
    lead_ids = tokenizer.encode(lead, add_special_tokens=False) if lead else []
    answer_ids = tokenizer.encode(str(answer), add_special_tokens=False)
    if not answer_ids:
        raise ValueError(f"igpo: the answer {answer!r} encodes to no tokens; the information-gain pass needs one")
    return lead_ids, answer_ids


@dataclass
class Probe:
    """One teacher-forced sequence: rollout `row`, turn `turn` (0 = the prior), and its token ids."""

    row: int
    turn: int
    context: list[int]  # prompt + completion before the turn + the pseudo-answer's lead-in
    answer: list[int]  # the scored tokens


def rollout_probes(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                   spans: Sequence[Sequence[tuple[int, int]]], answers: Sequence[tuple[list[int], list[int]]],
                   prior_lead: Sequence[int] | None = None) -> list[Probe]:
    """The probes of a batch: for every rollout with K >= 2 turns and t < K, the prompt, the completion's tokens
    before turn t, the lead-in and the answer (`answers[i]` = (lead-in ids, answer ids), `pseudo_answer_ids`).
    ``prior_lead``, when given, replaces the lead-in of the prior probe (t = 0).

    >>> ps = rollout_probes([[1, 2]], [[5, 6, 0, 0, 7]], [[(0, 2), (4, 5)]], [([8], [9, 9])])
    >>> [(p.turn, p.context, p.answer) for p in ps]
    [(0, [1, 2, 8], [9, 9]), (1, [1, 2, 5, 6, 0, 0, 8], [9, 9])]
    """
    probes = []
    for i, turns in enumerate(spans):
        if len(turns) < 2:
            continue
        lead, ans = answers[i]
        for t, (start, _) in enumerate(turns):
            head = list(prior_lead) if t == 0 and prior_lead is not None else list(lead)
            probes.append(Probe(i, t, list(prompt_ids[i]) + list(completion_ids[i][:start]) + head, list(ans)))
    return probes


@dataclass
class ProbeBatch:
    """Probes padded as TRL lays out a batch: contexts left-padded, answers right-padded after them."""

    input_ids: torch.Tensor  # (N, P + A)
    attention_mask: torch.Tensor  # (N, P + A)
    answer_mask: torch.Tensor  # (N, A) float: 1 on each probe's answer tokens
    tokens: int  # real (non-pad) tokens in the batch: the pass's work

    @classmethod
    def of(cls, probes: Sequence[Probe], pad_id: int) -> "ProbeBatch":
        P = max(len(p.context) for p in probes)
        A = max(len(p.answer) for p in probes)
        N = len(probes)
        ids = torch.full((N, P + A), int(pad_id), dtype=torch.long)
        att = torch.zeros((N, P + A), dtype=torch.long)
        amask = torch.zeros((N, A))
        for j, p in enumerate(probes):
            ids[j, P - len(p.context) : P] = torch.tensor(p.context, dtype=torch.long)
            ids[j, P : P + len(p.answer)] = torch.tensor(p.answer, dtype=torch.long)
            att[j, P - len(p.context) : P + len(p.answer)] = 1
            amask[j, : len(p.answer)] = 1.0
        return cls(ids, att, amask, int(att.sum()))


def answer_probabilities(logps_fn: LogpsFn, probes: Sequence[Probe], n_rollouts: int, pad_id: int
                         ) -> tuple[list[list[float]], ProbeBatch | None]:
    """Each rollout's [p_0, ..., p_{K-1}] (empty when it was not probed), p_t = exp(mean log-prob of the answer
    tokens of probe t), from one batched call of ``logps_fn(input_ids, attention_mask, logits_to_keep)``, which
    returns the (N, logits_to_keep) log-probs of the last tokens (TRL's layout)."""
    out: list[list[float]] = [[] for _ in range(n_rollouts)]
    if not probes:
        return out, None
    batch = ProbeBatch.of(probes, pad_id)
    with torch.no_grad():
        logps = logps_fn(batch.input_ids, batch.attention_mask, batch.answer_mask.size(1)).detach().float().cpu()
    m = batch.answer_mask
    p = ((logps * m).sum(1) / m.sum(1)).exp()
    for probe, value in zip(probes, p.tolist()):
        out[probe.row].append(float(value))
    return out, batch


def prior_lead_text(task: Any, prior_lead: str | None) -> str | None:
    """The prior probe's lead-in: ``prior_lead`` when set, else the task's cheapest mode tag when the task has modes
    (`Task.modes`, declared as a leading ``[mode]`` tag: mixed_arithmetic's ``[instant]``, "answer at once"), else
    None (the prior uses the other turns' lead-in)."""
    if prior_lead is not None:
        return prior_lead
    modes = tuple(getattr(task, "modes", ()) or ())
    return f"[{modes[0]}]" if modes else None


class InfoGainMixin:
    """The adapter side: ``self.info_gain_probs(...)`` on this process's rollouts, after generation (TRL's trainer
    attributes: ``model``, ``processing_class``, ``accelerator``, ``args``; the adapter's ``shaping`` and ``task``).

    The wiring (`workbench.trainers`): in ``_calculate_rewards``, when ``wants_info_gain(self.shaping.terms)``, call
    it on this process's prompt ids, completion ids, tool mask and examples' ``answer`` and gather the result into
    ``Rollouts.turn_probs`` (rollout order, as every per-rollout fact)."""

    def info_gain_probs(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                        tool_mask: Sequence[Sequence[int]], answers: Sequence[Any]) -> list[list[float]]:
        term = info_gain_term(self.shaping.terms)
        tok = self.processing_class
        pseudo = [pseudo_answer_ids(tok, str(a), term.lead) for a in answers]
        prior_lead = prior_lead_text(self.task, term.prior_lead)
        prior = tok.encode(prior_lead, add_special_tokens=False) if prior_lead is not None else None
        spans = turn_spans(mask_tensor(tool_mask))
        probes = rollout_probes(prompt_ids, completion_ids, spans, pseudo, prior)
        device = self.accelerator.device
        was_training = self.model.training

        def logps(ids: torch.Tensor, att: torch.Tensor, keep: int) -> torch.Tensor:
            lp, _, _ = self._get_per_token_logps_and_entropies(
                self.model, ids.to(device), att.to(device), keep,
                batch_size=self.args.per_device_train_batch_size, compute_entropy=False)
            return lp

        try:
            probs, _ = answer_probabilities(logps, probes, len(completion_ids), tok.pad_token_id)
        finally:
            self.model.train(was_training)
        return probs
