"""`eval.backend=vllm`: sampling through vLLM on a CUDA GPU (only used when vllm is importable and CUDA is up).

Not exercised on the CPU development machine (vLLM needs a GPU); `available()` is what the workbench checks
before planning an evaluation, so elsewhere `eval.backend=vllm` is a one-line ConfigError.

Entropy: vLLM returns the top-`logprobs` log-probabilities per generated token, not the full distribution, so
the per-token entropy is approximated from the top TOP_LOGPROBS tokens plus one bucket holding the remaining
probability mass (a lower bound of the true entropy; close when the distribution is peaked).
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

#: Log-probabilities requested per generated token for the entropy approximation.
TOP_LOGPROBS = 20


def available() -> tuple[bool, str]:
    """(True, "") when vllm is importable and a CUDA GPU is present, else (False, reason)."""
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU"
    return True, ""


def _entropy(top: dict[int, Any] | None) -> float | None:
    if not top:
        return None
    probs = [math.exp(lp.logprob if hasattr(lp, "logprob") else float(lp)) for lp in top.values()]
    h = -sum(p * math.log(p) for p in probs if p > 0)
    rest = 1.0 - sum(probs)
    if rest > 1e-9:
        h -= rest * math.log(rest)
    return h


def sample(model_path: str, tokenizer: Any, prompts: list[str], n: int, temperature: float, max_new_tokens: int,
           seed: int = 0, use_chat_template: bool = False) -> list[Any]:
    """Same contract as `workbench.evaluation.generate.sample`: len(prompts) * n Samples, problem-major."""
    from vllm import LLM, SamplingParams

    from workbench.evaluation.generate import Sample
    from workbench.prompts import render_prompt

    llm = LLM(model=model_path, tokenizer=model_path, seed=seed)
    params = SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens, logprobs=TOP_LOGPROBS, seed=seed)
    texts = [render_prompt(tokenizer, p, use_chat_template) for p in prompts]
    out = []
    for i, request in enumerate(llm.generate(texts, params)):
        for comp in request.outputs:
            ent = [_entropy(step) for step in comp.logprobs] if comp.logprobs else None
            ids = list(comp.token_ids)
            out.append(Sample(i, comp.text, ids, comp.finish_reason == "length",
                              [e for e in ent if e is not None] if ent else None))
    return out
