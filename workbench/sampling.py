"""Samplers: which prompts a training step generates for, how many rollouts each gets, and with what prompt.

The one extension point for methods that act on *sampling* rather than on rewards, advantages or the loss. TRL's
GRPO draws a fixed generation batch: `num_prompts` prompts, each repeated `num_generations` (G) times in a row (its
`RepeatSampler`), and normalises advantages over each block of G rows. A sampler keeps that shape and rewrites the
rows *before* TRL generates:

- ``plan(rows, group_size, step, rng) -> rows``: the whole generation batch (gathered over processes, groups of G
  contiguous; each row a dataset example: ``prompt``, ``answer``, ``id``, ...) in, the same number of rows out, still
  in groups of G. A sampler may repeat a prompt over several groups (more rollouts for it) and drop another (fewer),
  which is how a per-prompt rollout budget is expressed with a fixed G (budgets are multiples of G), and may rewrite
  a row's prompt (a per-rollout prefix/suffix). A row's ``completion_prefix`` (`COMPLETION_PREFIX`) text is forced
  as the first tokens of its completion (the trainer's LM-head hook leaves only the prefix's next token sampleable
  at each of the first steps; transformers generation only): the prefix is then part of the completion, scored and
  trained on like sampled tokens (e.g. forcing a mode tag). Extra keys a sampler sets on a row (``forced_mode``)
  ride through TRL to the reward side untouched (TRL passes dataset columns through) and come back in ``observe``.
- ``observe(rollouts, rows)``: after scoring, the `workbench.rollouts.Rollouts` record of the batch and the rows
  that were generated for (state updates: success rates per prompt).
- ``metrics()``: logged as ``sampler/<name>/<key>``; ``state_dict`` / ``load_state_dict``: kept in checkpoints
  (``sampling_state.json`` beside ``shaping_state.json``).

Temperature is one value per TRL generation call, so a per-rollout temperature is not a row rewrite: a method that
needs a second temperature (AEPO) has a second generation call, whose rows the adapter splices into the batch
(`splice_rows`). A replay sampler (``draw`` / ``admit``: SPEAR's buffer, `workbench.sampling_replay`) has stored
past rows spliced in the same way (`workbench.replay`). The interface and the table live in
`workbench.sampler_base` (re-exported here). Samplers never see or change rewards: the reward path (`workbench.shaping`) is untouched,
and the terms score whatever rows were generated.

Where it hooks in: `workbench.trainers.ShapingMixin._generate_and_score_completions` calls `plan_rows` on TRL's
generation batch before TRL's own method and `observe_rows` after scoring; only in training (evaluation is never
resampled). Every process plans the gathered batch with the same seeded generator (``seed + step``) and keeps its
slice, so all processes agree on the layout.

Config: the ``sampler`` group, ``rl train ... sampler=[knapsack]`` (``conf/sampler/<name>.yaml``); several
samplers run in the listed order.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, ClassVar

from workbench.config import ConfigError, from_dict
from workbench.sampler_base import SAMPLERS, Sampler, register  # noqa: F401  (the interface, re-exported)
from workbench.sampling_replay import SpearReplay  # noqa: F401  (registers spear_replay)

#: The row key whose text the trainer forces as the start of that rollout's completion.
COMPLETION_PREFIX = "completion_prefix"
#: APO's ways to force a mode.
FORCE_CHOICES = ("decode", "prompt")


def build_samplers(cfg: dict[str, dict[str, Any]]) -> list[Sampler]:
    """The ``sampler`` config group ({name: {option: value}}) as sampler objects, in order; unknown names or options
    are a one-line ConfigError naming the key and the valid choices."""
    out = []
    for name, options in (cfg or {}).items():
        if name not in SAMPLERS:
            raise ConfigError(f"sampler.{name}: unknown sampler; valid: {', '.join(sorted(SAMPLERS))}")
        out.append(from_dict(SAMPLERS[name], dict(options or {}), prefix=f"sampler.{name}"))
        out[-1].check()
    return out


def groups_of(rows: list[dict[str, Any]], group_size: int) -> list[list[dict[str, Any]]]:
    if group_size <= 0 or len(rows) % group_size:
        raise ValueError(f"generation batch of {len(rows)} rows is not whole groups of {group_size}")
    return [rows[i : i + group_size] for i in range(0, len(rows), group_size)]


def plan_rows(samplers: list[Sampler], rows: list[dict[str, Any]], group_size: int, step: int,
              seed: int) -> list[dict[str, Any]]:
    """Run every sampler's `plan` in order; the result has as many rows as the input, in whole groups."""
    rng = random.Random(int(seed) * 1_000_003 + int(step))
    for s in samplers:
        new = s.plan(list(rows), group_size, step, rng)
        if len(new) != len(rows):
            raise RuntimeError(f"sampler '{s.name}' returned {len(new)} rows for a batch of {len(rows)}")
        rows = new
    return rows


def observe_rows(samplers: list[Sampler], rollouts: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Every sampler's `observe`, then their metrics as ``sampler/<name>/<key>``."""
    out: dict[str, float] = {}
    for s in samplers:
        s.observe(rollouts, rows)
        out.update({f"sampler/{s.name}/{k}": float(v) for k, v in s.metrics().items()})
    return out


def with_instruction(prompt: Any, text: str) -> Any:
    """`prompt` (plain text, or chat messages whose last one is the user's) with `text` appended on a new line."""
    if isinstance(prompt, str):
        return f"{prompt}\n{text}"
    messages = [dict(m) for m in prompt]
    messages[-1]["content"] = f"{messages[-1]['content']}\n{text}"
    return messages


# ----------------------------------------------------------------------------------------------- Knapsack RL


def knapsack_budget(rates: list[float | None], n: int, min_n: int, max_n: int, negative_n: int, positive_n: int,
                    alpha: float = 0.9, unit: int = 1) -> list[int]:
    """Knapsack RL's allocation (Li et al., arXiv 2509.25849; liziniu/KnapsackRL `sampling_budget_by_knapsack` with
    `solve_by_dp`, cost estimation "probability"): a budget of ``len(rates) * n`` slots over prompts with last
    success rate p (None = unseen).

    Unseen prompts get n, p = 0 gets `negative_n`, p = 1 `positive_n`, 0 < p < 1 starts at `min_n`; the rest goes to
    the mixed prompts by a bounded knapsack (at most ``max_n - min_n`` more each) maximising
    sum (1 - p^N - (1 - p)^N) p (1 - p)^2 over their totals N. Before that, if the mixed prompts' expected need
    sum min(max_n, ln(1 - alpha) / ln max(p, 1 - p)) (floored) is below what is left, the excess goes to the p = 0
    prompts (none: to the other unmixed ones); with no mixed prompt at all, all of it goes to the p = 0 prompts
    (none: n each). "p = 0 prompts" includes unseen ones, as in the authors' code (their rate array is 0 there). What the DP cannot place is spread evenly over the mixed prompts, as the authors do.

    `unit` is the size of one slot in rollouts (the workbench's cheap form uses unit = G: a slot is one group): the
    value of N slots is computed for N * unit rollouts and the leftover rule's need is rounded up to whole slots.
    unit = 1 is the authors' function exactly."""
    B = len(rates)
    budget = [0] * B
    mixed = [i for i, p in enumerate(rates) if p is not None and 0 < p < 1]
    zeros = [i for i, p in enumerate(rates) if p is None or p == 0]  # the authors' test is rate == 0, and an
    # unseen prompt's rate is left at 0 there, so unseen prompts share the excess with the p = 0 ones
    for i, p in enumerate(rates):
        budget[i] = n if p is None else negative_n if p == 0 else positive_n if p == 1 else min_n
    left = B * n - sum(budget)

    def spread(amount: int, targets: list[int]) -> None:
        for j, i in enumerate(targets):
            budget[i] += amount // len(targets) + (1 if j < amount % len(targets) else 0)

    if not mixed:
        if left > 0:
            if zeros:
                spread(left, zeros)
            else:
                budget = [n] * B
        return budget
    def slots(p: float) -> float:  # rollouts for a mixed group with chance alpha, in slots (rounded up if unit > 1)
        cost = math.log(1 - alpha) / math.log(max(p, 1 - p))
        return math.ceil(cost / unit) if unit > 1 else cost

    need = sum(int(min(max_n, slots(rates[i]))) for i in mixed)
    if need < left:
        others = zeros or [i for i in range(B) if i not in mixed]
        spread(left - need, others)
        left = need
    extra = _knapsack([rates[i] for i in mixed], left, max_n - min_n, min_n, unit)
    for i, k in zip(mixed, extra):
        budget[i] += k
    rest = left - sum(extra)
    if rest > 0:
        spread(rest, mixed)
    return budget


def _knapsack(rates: list[float], capacity: int, most: int, base: int, unit: int) -> list[int]:
    """Extra slots per item (0..most each, total <= capacity, the largest reachable total) maximising the sum of
    (1 - p^N - (1 - p)^N) p (1 - p)^2, N = (base + k) * unit for an item given k > 0, 0 for k = 0."""
    if capacity <= 0:
        return [0] * len(rates)
    NEG = float("-inf")
    best = [0.0] + [NEG] * capacity
    choices: list[list[int]] = []
    for p in rates:
        row = [0] * (capacity + 1)
        new = list(best)
        for w in range(capacity + 1):
            for k in range(1, min(most, w) + 1):
                if best[w - k] == NEG:
                    continue
                N = (base + k) * unit
                value = best[w - k] + (1 - p**N - (1 - p) ** N) * p * (1 - p) ** 2
                if value > new[w]:
                    new[w], row[w] = value, k
        best = new
        choices.append(row)
    w = max(w for w in range(capacity + 1) if best[w] != NEG)
    out = [0] * len(rates)
    for i in range(len(rates) - 1, -1, -1):
        out[i] = choices[i][w]
        w -= out[i]
    return out


@register
@dataclasses.dataclass
class Knapsack(Sampler):
    """Knapsack RL (card G2-7), the cheap form a fixed `num_generations` allows: the budget is counted in *groups*.

    The batch's B prompts have B groups of G rollouts. Each prompt's last success rate (its previous visit's share of
    correct rollouts over all its groups; kept in checkpoints) decides how many groups it gets, by `knapsack_budget`
    with unit = G, n = 1, min_n = 1, max_n = ``max_rollouts // G``, negative_n = positive_n = 0: an unseen prompt
    keeps its one group, a mixed one starts at one and the freed groups go to the mixed prompts by the authors' DP
    (value of N = k * G rollouts), the leftover rule as theirs. A prompt that was all right or all wrong gets no group,
    except that with probability `revisit` it keeps one (so its rate is measured again; 0.25 x G = 2 rollouts in
    expectation at G = 8, the authors' `negative_n` = `positive_n` = 2).

    What differs from the paper: budgets are multiples of G (the paper gives 2 to 128 rollouts in steps of 1), and a
    prompt with k groups has its advantages normalised within each group of G by TRL, not over all k * G rollouts;
    the success rate is measured on whatever groups it had. Defaults: max_rollouts 128 (`max_n`), alpha 0.9.

    Metrics: ``sampler/knapsack/mixed_prompts`` (share of the batch's prompts with 0 < p < 1),
    ``extra_groups`` (groups moved to another prompt this step), ``max_groups`` (the most groups one prompt got),
    ``dropped_prompts`` (prompts that got none), ``known_prompts`` (prompts with a rate)."""

    name: ClassVar[str] = "knapsack"
    max_rollouts: int = 128
    alpha: float = 0.9
    revisit: float = 0.25

    def __post_init__(self) -> None:
        self.rates: dict[str, float] = {}  # prompt id -> success rate at its last visit (checkpointed)
        self._last: dict[str, float] = {}

    def check(self) -> None:
        if self.max_rollouts < 1 or not 0 < self.alpha < 1 or not 0 <= self.revisit <= 1:
            raise ConfigError("sampler.knapsack: max_rollouts >= 1, 0 < alpha < 1 and 0 <= revisit <= 1")

    def plan(self, rows, group_size, step, rng):
        groups = groups_of(rows, group_size)
        keys = [str(g[0].get("id")) for g in groups]
        rates: list[float | None] = [self.rates.get(k) for k in keys]
        for i, p in enumerate(rates):
            if p in (0.0, 1.0) and rng.random() < self.revisit:
                rates[i] = None  # measured again: one group, like an unseen prompt
        counts = knapsack_budget(rates, n=1, min_n=1, max_n=max(1, self.max_rollouts // group_size),
                                 negative_n=0, positive_n=0, alpha=self.alpha, unit=group_size)
        out = [row for g, c in zip(groups, counts) for _ in range(c) for row in g]
        self._last = {"mixed_prompts": sum(p is not None and 0 < p < 1 for p in rates) / len(rates),
                      "extra_groups": float(sum(max(0, c - 1) for c in counts)), "max_groups": float(max(counts)),
                      "dropped_prompts": float(sum(c == 0 for c in counts)), "known_prompts": float(len(self.rates))}
        return out

    def observe(self, rollouts, rows):
        seen: dict[str, list[float]] = {}
        for row, ok in zip(rows, rollouts.correct.tolist()):
            seen.setdefault(str(row.get("id")), []).append(float(ok))
        for key, oks in seen.items():
            self.rates[key] = sum(oks) / len(oks)

    def metrics(self):
        return dict(self._last)

    def state_dict(self):
        return {"rates": dict(self.rates)}

    def load_state_dict(self, state):
        self.rates = {str(k): float(v) for k, v in state.get("rates", {}).items()}


# ----------------------------------------------------------------------------------------------- A²FM APO


@register
@dataclasses.dataclass
class APO(Sampler):
    """A²FM's adaptive sampling (APO, card 3; Chen et al., arXiv 2510.12838; no released training code, so the form
    is this module's decision): in every group, `per_mode` rollouts are forced into each of the task's modes and the
    rest choose freely, so the reward's mode comparison (`mode_cost`: a dear mode loses what a cheaper one reached on
    the same problem) always has every mode's evidence, even after the free policy stopped trying the cheap mode.

    Forcing (`force`): ``decode`` (default) makes the mode tag (``[<mode>]``, the task's own) the first tokens of the
    forced rollout's completion (`COMPLETION_PREFIX`): the prompt is unchanged, the tag stays in the completion, where
    the task, `mode_cost` and the cost terms read it, and the policy gradient acts on the tag tokens like on sampled
    ones, so a forced mode that pays raises the tag's probability under the plain prompt (the tokens' probabilities
    are the model's own, not the forced distribution's: the importance ratio is TRL's usual one). ``prompt`` instead
    adds a line ``Start with [<mode>].`` to the prompt (works with vLLM; the model may ignore it: on the 150-step
    tiny model no forced rollout complied). ``sampler/apo/compliance`` is the share of forced rollouts that declare
    their forced mode (1.0 with ``decode``, a check of the forcing).
    Forced rows are the first ``per_mode x modes`` of each group, in the task's mode order (cheapest first); with
    G = 8 and per_mode 2 (default: 2 forced per mode, 2 free, about A²FM's equal share per mode) at 3 modes.

    Needs a task with modes (`task=mixed_arithmetic`); pair with the cost-regularised reward
    ``reward=[correctness,mode_cost,cost_tokens]`` (experiment agentic_cost). Metrics: ``forced_share``,
    ``compliance``, ``free_<mode>`` (share of the free rollouts declaring each mode)."""

    name: ClassVar[str] = "apo"
    per_mode: int = 2
    modes: list[str] = dataclasses.field(default_factory=list)  # empty: the task's modes
    force: str = "decode"

    def __post_init__(self) -> None:
        self._last: dict[str, float] = {}

    def check(self) -> None:
        if self.per_mode < 0:
            raise ConfigError(f"sampler.apo.per_mode={self.per_mode}: expected >= 0")
        if self.force not in FORCE_CHOICES:
            raise ConfigError(f"sampler.apo.force={self.force!r} is not valid; choose one of: {', '.join(FORCE_CHOICES)}")

    def bind_task(self, task: Any) -> None:
        task_modes = list(getattr(task, "modes", ()) or ())
        if not task_modes:
            raise ConfigError("sampler=apo needs a task with modes (task=mixed_arithmetic)")
        for m in self.modes:
            if m not in task_modes:
                raise ConfigError(f"sampler.apo.modes: unknown mode '{m}'; valid: {', '.join(task_modes)}")
        self.modes = self.modes or task_modes

    def plan(self, rows, group_size, step, rng):
        forced = self.per_mode * len(self.modes)
        if forced > group_size:
            raise ConfigError(f"sampler.apo.per_mode={self.per_mode} x {len(self.modes)} modes exceeds "
                              f"num_generations={group_size}")
        out = []
        for group in groups_of(rows, group_size):
            for j, row in enumerate(group):
                mode = self.modes[j // self.per_mode] if j < forced else None
                tag = f"[{mode}]" if mode else None  # the tag `workbench.signals.completion_mode` reads
                row = {**row, "forced_mode": mode}  # every row has the same keys (TRL reads columns off row 0)
                if self.force == "decode":
                    row[COMPLETION_PREFIX] = tag
                elif tag:
                    row["prompt"] = with_instruction(row["prompt"], f"Start with {tag}.")
                out.append(row)
        self._last = {"forced_share": forced / group_size}
        return out

    def observe(self, rollouts, rows):
        modes = rollouts.modes or [None] * len(rows)
        forced = [(row.get("forced_mode"), m) for row, m in zip(rows, modes) if row.get("forced_mode")]
        free = [m for row, m in zip(rows, modes) if not row.get("forced_mode")]
        if forced:
            self._last["compliance"] = sum(f == m for f, m in forced) / len(forced)
        for mode in self.modes:
            if free:
                self._last[f"free_{mode}"] = sum(m == mode for m in free) / len(free)

    def metrics(self):
        return dict(self._last)


# ----------------------------------------------------------------------------------------------- AEPO

#: Keys of TRL's GRPO batch that hold prompt-side tokens (left-padded), completion-side (right-padded) or one value
#: per row; `splice_rows` refuses any other per-row key rather than guess its layout.
PROMPT_KEYS = ("prompt_ids", "prompt_mask")
COMPLETION_KEYS = ("completion_ids", "completion_mask", "old_per_token_logps", "sampling_per_token_logps",
                   "ref_per_token_logps", "tool_mask", "importance_sampling_ratio")
ROW_KEYS = ("advantages", "rollout_index", "rollout_correct", "rollout_reward", "rollout_group_accuracy")


def splice_rows(batch: dict[str, Any], extra: dict[str, Any], take: Any, pad_id: int) -> dict[str, Any]:
    """`batch` (TRL's per-process GRPO batch) with its first ``len(take)`` rows replaced by rows `take` of `extra`
    (another generation's batch): prompt tensors are left-padded, completion tensors right-padded to the wider of
    the two (token ids with `pad_id`, masks and log-probs with 0). Returns a new dict; ``num_items_in_batch`` is left
    to the caller (it is a count over all processes)."""
    import torch

    m = len(take)
    out = dict(batch)
    if m == 0:
        return out
    take = torch.as_tensor(take, dtype=torch.long, device=batch["completion_ids"].device)
    for key, value in batch.items():
        if key == "num_items_in_batch" or not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        if key not in extra:
            raise ValueError(f"splice_rows: '{key}' is in the batch but not in the second generation's")
        new = extra[key].index_select(0, take.to(extra[key].device)).to(value.device, value.dtype)
        if key in ROW_KEYS and value.dim() == 1:
            out[key] = torch.cat([new, value[m:]])
            continue
        if new.dim() != value.dim():
            raise ValueError(f"splice_rows: '{key}' has {new.dim()} dims in the second generation, {value.dim()} here")
        if key not in PROMPT_KEYS and key not in COMPLETION_KEYS and key != "advantages":  # (B, T) advantages
            raise ValueError(f"splice_rows: unknown per-row key '{key}' (known: {PROMPT_KEYS + COMPLETION_KEYS})")
        width = max(value.size(1), new.size(1))
        fill = pad_id if key.endswith("_ids") else 0
        left = key in PROMPT_KEYS

        def widen(t):
            pad = (width - t.size(1), 0) if left else (0, width - t.size(1))
            return torch.nn.functional.pad(t, pad, value=fill)

        out[key] = torch.cat([widen(new), widen(value[m:])], dim=0)
    return out


@register
@dataclasses.dataclass
class AEPO(Sampler):
    """AEPO (card 11; Wang et al., arXiv 2510.08141; 597358816/AEPO `verl/trainer/ray_trainer.py` fit loop, AEPO
    branch, with `_select_by_advantage`): entropy control by a second generation at another temperature whose
    positive samples replace part of the GRPO batch as pure REINFORCE samples.

    Each training step, after the GRPO batch is generated and scored: with H the previous step's mean token entropy
    of the training pass (TRL's ``entropy`` metric; 0 before the first, as the authors' loop starts), the same
    prompts are generated again (G each, as the authors do: the whole batch, not a share) at T = `temperature_high`
    if H <= `entropy_target`, else `temperature_low`; scored and group-normalised as usual; the rows with advantage
    > `threshold` (0.05) get advantage 1 and the first m rows of the GRPO batch are replaced by the first m of them,
    m = min(`sample_num`, positives), halved (floor) when H > target. The update then runs on the mixed batch, with
    log-probs at the run's temperature (the authors recompute old log-probs at temperature 1 for the mixed batch).

    Defaults: the authors' entropy_base 0.5, T 1.2 / 0.8, threshold 0.05; `sample_num` (their
    reinforce_sample_num, 60 of a 512 x 5 batch, ~2.3%) counts per process here and defaults to 4 of 64. Decisions:
    no positives -> the batch is left as it is (the authors' code fails there); the second generation's metrics are
    not logged (TRL's reward and length means stay the GRPO batch's), but its rewards pass through the reward
    pipeline, so stateful reward terms see it; loss regularizers are refused (the spliced rows are not in the
    record their group layout comes from). Cost: one more generation and scoring per step. Metrics:
    ``sampler/aepo/temperature``, ``entropy`` (H used), ``positives`` (share of the second batch), ``replaced``
    (rows replaced). Transformers generation only (vLLM's temperature is not switched)."""

    name: ClassVar[str] = "aepo"
    entropy_target: float = 0.5
    temperature_high: float = 1.2
    temperature_low: float = 0.8
    sample_num: int = 4
    threshold: float = 0.05

    def __post_init__(self) -> None:
        self._last: dict[str, float] = {}

    def check(self) -> None:
        if self.temperature_high <= 0 or self.temperature_low <= 0 or self.sample_num < 0:
            raise ConfigError("sampler.aepo: temperature_high, temperature_low > 0 and sample_num >= 0")

    def second_temperature(self, entropy: float) -> float:
        """The temperature of the second generation, from the previous step's entropy."""
        t = self.temperature_high if entropy <= self.entropy_target else self.temperature_low
        self._last = {"entropy": float(entropy), "temperature": t}
        return t

    def positives(self, advantages: Any, entropy: float) -> list[int]:
        """Rows of the second generation that replace the first rows of the GRPO batch (their advantage becomes 1)."""
        adv = advantages.reshape(advantages.size(0), -1)[:, 0]
        rows = (adv > self.threshold).nonzero().flatten().tolist()  # compared in the tensor's dtype, as theirs
        m = min(self.sample_num, len(rows))
        if entropy > self.entropy_target:
            m //= 2
        self._last.update(positives=len(rows) / max(1, adv.numel()), replaced=float(m))
        return rows[:m]

    def metrics(self):
        """Once per step: the trainer files them after the second generation (and finds none at `observe`)."""
        out, self._last = self._last, {}
        return out
