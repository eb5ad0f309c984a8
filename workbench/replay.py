"""The adapter side of replay samplers (SPEAR's self-imitation buffer, `workbench.sampling_replay.SpearReplay`):
rows of TRL's generation batch to buffer records and back.

`ReplayMixin` is mixed into `workbench.trainers.ShapingMixin`, which calls `check_replay` once the samplers are
set and `replay_step(out, scored)` at the end of each training `_generate_and_score_completions` (step 4 of its
docstring). A replay sampler is one with ``draw`` and ``admit`` methods. Per step: the sampler draws past rows
(identical on every process: the buffer is built from gathered rows and the draw is seeded by ``seed + step``),
this process splices its share (``drawn[rank::world]``) over its rows with advantage 0 (`zero_advantage_rows`,
moved first, then `workbench.sampling.splice_rows`), and the step's batch, as generated, is admitted.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from accelerate.utils import gather, gather_object

from workbench.config import ConfigError
from workbench.sampling import observe_rows, splice_rows


def batch_records(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Per row of a TRL GRPO batch: its prompt ids (unpadded), completion ids through the completion mask, and the
    tool mask over them (None without tools): what a buffered row keeps."""
    records = []
    tool = out.get("tool_mask")
    for i in range(out["completion_ids"].size(0)):
        p = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
        n = int(out["completion_mask"][i].sum())
        records.append({"prompt_ids": p, "completion_ids": out["completion_ids"][i, :n].tolist(),
                        "tool_mask": tool[i, :n].tolist() if tool is not None else None})
    return records


def records_batch(records: list[dict[str, Any]], advantages: list[float], like: dict[str, Any],
                  pad_id: int) -> dict[str, Any]:
    """The inverse of `batch_records` for the keys of `like` (a TRL batch): prompts left-padded, completions
    right-padded, `advantages` per row (expanded to (m, T) when `like`'s are per token)."""
    m = len(records)
    dev = like["completion_ids"].device
    P = max([len(r["prompt_ids"]) for r in records] + [1])
    T = max([len(r["completion_ids"]) for r in records] + [1])
    out = {"prompt_ids": torch.full((m, P), pad_id, dtype=torch.long, device=dev),
           "prompt_mask": torch.zeros((m, P), dtype=torch.long, device=dev),
           "completion_ids": torch.full((m, T), pad_id, dtype=torch.long, device=dev),
           "completion_mask": torch.zeros((m, T), dtype=torch.long, device=dev)}
    if "tool_mask" in like:
        out["tool_mask"] = torch.zeros((m, T), dtype=torch.long, device=dev)
    for i, r in enumerate(records):
        p, c = r["prompt_ids"], r["completion_ids"]
        if p:
            out["prompt_ids"][i, P - len(p):] = torch.tensor(p, dtype=torch.long)
            out["prompt_mask"][i, P - len(p):] = 1
        if c:
            out["completion_ids"][i, : len(c)] = torch.tensor(c, dtype=torch.long)
            out["completion_mask"][i, : len(c)] = 1
            if "tool_mask" in out:
                mask = r.get("tool_mask") or [1] * len(c)
                out["tool_mask"][i, : len(c)] = torch.tensor(mask, dtype=torch.long)
    adv = torch.tensor(advantages, dtype=like["advantages"].dtype, device=dev)
    out["advantages"] = adv.unsqueeze(1).expand(m, T).clone() if like["advantages"].dim() == 2 else adv
    return out


def zero_advantage_rows(advantages: torch.Tensor) -> list[int]:
    """Rows whose advantage is 0 at every token (their surrogate gradient is 0)."""
    adv = advantages.reshape(advantages.size(0), -1)
    return (adv == 0).all(dim=1).nonzero().flatten().tolist()


def rows_first(batch: dict[str, Any], first: list[int]) -> dict[str, Any]:
    """`batch` with rows `first` moved to the front (the order of the rest kept): TRL shuffles rows anyway."""
    B = batch["completion_ids"].size(0)
    rest = [i for i in range(B) if i not in set(first)]
    order = torch.tensor(list(first) + rest, dtype=torch.long, device=batch["completion_ids"].device)
    return {k: (v.index_select(0, order.to(v.device)) if isinstance(v, torch.Tensor) and v.dim() > 0
                and k != "num_items_in_batch" else v) for k, v in batch.items()}


class ReplayMixin:
    """Replay samplers in `ShapingMixin` (see the module docstring)."""

    def check_replay(self) -> None:
        if not [s for s in self.samplers if hasattr(s, "draw") and hasattr(s, "admit")]:
            return
        reasons = {
            "algo.use_vllm=false": getattr(self, "use_vllm", False),
            "algo.num_iterations=1 (TRL then keeps no old log-probs, which replayed rows do not have)":
                int(getattr(self, "num_iterations", 1)) > 1,
            "algo.beta=0 (replayed rows have no reference log-probs)": float(getattr(self, "beta", 0.0)) != 0.0,
            "no loss regularizers": bool(self.shaping.regularizers),
            "no second-generation sampler (aepo)": any(hasattr(s, "second_temperature") for s in self.samplers),
        }
        bad = [need for need, broken in reasons.items() if broken]
        if bad:
            raise ConfigError(f"a replay sampler splices stored rows into the batch; it needs {'; '.join(bad)}")

    def replay_step(self, out: dict[str, Any], scored: dict[str, Any]) -> dict[str, Any]:
        """Draw, splice, admit (module docstring); returns the batch TRL trains on."""
        samplers = [s for s in self.samplers if hasattr(s, "draw") and hasattr(s, "admit")]
        if not samplers:
            return out
        if out.get("old_per_token_logps") is not None:
            raise ConfigError("a replay sampler needs TRL's on-policy update (no old log-probs): set "
                              "algo.steps_per_generation <= algo.gradient_accumulation_steps and algo.num_iterations=1")
        step = int(self.state.global_step) + 1  # the authors' 1-based step
        G = int(self.num_generations)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        records = gather_object(batch_records(out))
        adv = gather(out["advantages"].reshape(out["advantages"].size(0), -1)[:, 0].contiguous()).cpu().tolist()
        rewards = scored["rewards"].tolist()
        tool_log = scored["rollouts"].tool_log
        tool_calls = [len(calls) for calls in tool_log] if tool_log is not None else None
        for s in samplers:
            drawn = s.draw(random.Random(int(self.args.seed) * 1_000_003 + step))
            w = s.weight(step)
            share = drawn[rank::world]
            slots = zero_advantage_rows(out["advantages"])
            m = min(len(share), len(slots))
            if m:
                extra = records_batch([r for r, _ in share[:m]], [a * w for _, a in share[:m]], out,
                                      self.processing_class.pad_token_id)
                out = splice_rows(rows_first(out, slots[:m]), extra, list(range(m)),
                                  self.processing_class.pad_token_id)
                mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
                out["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
            replayed = int(gather(torch.tensor([m], device=self.accelerator.device)).sum())
            s.admit(records, rewards, adv, G, step, tool_calls)
            s.record(weight=w, drawn=len(drawn), replayed=replayed, dropped=len(drawn) - replayed)
            self._file(observe_rows([s], None, []))
        return out
