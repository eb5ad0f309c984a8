"""Pure metric functions for `rl eval` (numpy/scipy only, no torch).

Per-sample inputs are rectangular: P problems x n samples per problem. Confidence intervals come from a
percentile bootstrap that resamples *problems* (samples of one problem are correlated, so they are resampled
together), except for proportions (accuracy, pass@k, maj@k, truncation rate), see `proportion_interval`:

- n = 1 sample per problem: the P per-problem outcomes are independent 0/1 trials, so the interval is Wilson's
  score interval with P trials (the percentile bootstrap is too narrow for small P and collapses to [0, 0] at a
  rate of 0);
- n > 1: the bootstrap over problems (it keeps the correlation of one problem's samples), unless every problem has
  the same value (e.g. no sample correct, or none truncated), where the bootstrap degenerates to a single point:
  then Wilson with P trials, i.e. each problem counted as one trial. That is the conservative end: the effective
  number of independent trials lies between P (a problem's samples all agree) and P*n (they are independent).

So a rate of 0 is never reported as [0.000, 0.000]; with 200 problems it reads [0.000, 0.019].

Sources:
- pass@k: Chen et al. 2021, "Evaluating Large Language Models Trained on Code" (Codex), unbiased estimator
  and its numerically stable product form.
- maj@k: Wang et al. 2022, "Self-Consistency Improves Chain of Thought Reasoning" (majority vote over answers).
- cost-of-pass: Erol et al. 2025, "Cost-of-Pass: An Economic Framework for Evaluating Language Models"
  (expected cost of one attempt divided by its success probability).
- Wilson score interval: Wilson 1927, "Probable Inference, the Law of Succession, and Statistical Inference";
  Brown, Cai & DasGupta 2001 (why it, not the Wald interval, for binomial proportions near 0 or 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from workbench.config import N_BOOT  # one number for rl eval and rl train's evaluations

#: maj@k with num_subsamples=None is computed exactly (all C(n, k) subsets) up to this many subsets.
MAJ_EXACT_LIMIT = 10_000
#: Random subsets used for maj@k when num_subsamples=None and C(n, k) > MAJ_EXACT_LIMIT.
MAJ_DEFAULT_SUBSAMPLES = 256


# ----------------------------------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (Chen et al. 2021, stable form). c=0 -> 0.0; n-c < k -> 1.0.
    Raises ValueError unless 1 <= k <= n and 0 <= c <= n.
    """
    n, c, k = int(n), int(c), int(k)
    if k < 1 or k > n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if c < 0 or c > n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if c == 0:
        return 0.0
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return float(1.0 - prod)


# ----------------------------------------------------------------------------------------------- maj@k


@lru_cache(maxsize=64)
def _all_subsets(n: int, k: int) -> np.ndarray:
    return np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)


def _as_rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)


def maj_at_k(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    k: int,
    num_subsamples: int | None = None,
    rng: Any = None,
) -> float:
    """Expected correctness of a majority vote over k of the n samples (Wang et al. 2022, self-consistency).

    The expectation is over size-k subsets drawn without replacement. Rules:
    - None answers (nothing extracted) never vote; a subset whose answers are all None scores 0.
    - Ties between top answers score the fraction of tied answers that are correct (= expected correctness
      of breaking the tie uniformly at random).
    - An answer's correctness is the mean of the `correct` flags of the samples giving it (identical answer
      strings normally share one flag, so this is that flag).
    Exact (all C(n, k) subsets) when C(n, k) <= num_subsamples, or <= MAJ_EXACT_LIMIT when num_subsamples is
    None; otherwise the mean over `num_subsamples` (default MAJ_DEFAULT_SUBSAMPLES) random subsets drawn with
    `rng` (a Generator, a seed, or None = seed 0). k == n is therefore always exact and deterministic.
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"answers ({n}) and correct ({len(correct)}) differ in length")
    k = int(k)
    if k < 1 or k > n:
        raise ValueError(f"maj@k needs 1 <= k <= n, got k={k}, n={n}")

    groups: dict[str, int] = {}
    gid = np.full(n, -1, dtype=np.int64)
    for i, a in enumerate(answers):
        if a is not None:
            gid[i] = groups.setdefault(a, len(groups))
    num_groups = len(groups)
    if num_groups == 0:
        return 0.0
    flags = np.asarray(correct, dtype=float)
    valid = gid >= 0
    group_correct = np.bincount(gid[valid], weights=flags[valid], minlength=num_groups) / np.bincount(
        gid[valid], minlength=num_groups
    )

    total = math.comb(n, k)
    limit = MAJ_EXACT_LIMIT if num_subsamples is None else int(num_subsamples)
    if total <= limit:
        subsets = _all_subsets(n, k)
    else:
        draws = MAJ_DEFAULT_SUBSAMPLES if num_subsamples is None else int(num_subsamples)
        if draws < 1:
            raise ValueError(f"num_subsamples must be >= 1, got {draws}")
        subsets = np.argsort(_as_rng(rng).random((draws, n)), axis=1)[:, :k]

    # Vote counts per subset: one extra column (index num_groups) collects the None votes and is dropped.
    votes = np.where(gid >= 0, gid, num_groups)[subsets]  # (S, k)
    rows = np.arange(len(subsets))
    counts = np.zeros((len(subsets), num_groups + 1))
    for j in range(k):
        np.add.at(counts, (rows, votes[:, j]), 1.0)
    counts = counts[:, :num_groups]
    top = counts.max(axis=1, keepdims=True)
    tied = (counts == top) & (top > 0)
    n_tied = tied.sum(axis=1)
    score = np.where(n_tied > 0, (tied * group_correct).sum(axis=1) / np.maximum(n_tied, 1), 0.0)
    return float(score.mean())


# ----------------------------------------------------------------------------------------------- cost, length


def cost_of_pass(costs: Sequence[float], correct: Sequence[bool]) -> float:
    """Cost-of-pass = mean cost per attempt / pass rate = total cost / number correct (Erol et al. 2025).

    Returns inf when no attempt is correct and NaN when there are no attempts; turning inf into something
    JSON-safe is the caller's job.
    """
    costs_a = np.asarray(costs, dtype=float).ravel()
    correct_a = np.asarray(correct, dtype=bool).ravel()
    if costs_a.shape != correct_a.shape:
        raise ValueError(f"costs {costs_a.shape} and correct {correct_a.shape} differ in shape")
    if costs_a.size == 0:
        return float("nan")
    n_correct = int(correct_a.sum())
    if n_correct == 0:
        return float("inf")
    return float(costs_a.sum() / n_correct)


def _nan_to_none(x: float | None) -> float | None:
    """None for None/NaN, else float(x); +-inf is kept."""
    return None if x is None or np.isnan(x) else float(x)


def length_stats(
    lengths: Sequence[float],
    correct: Sequence[bool] | None = None,
    truncated: Sequence[bool] | None = None,
) -> dict[str, float | None]:
    """Completion-length summary: mean, median, p90, correct_mean, incorrect_mean, truncation_rate.

    Statistics of an empty selection (or of a missing `correct` / `truncated`) are None instead of NaN.
    p90 is numpy's linear-interpolation 90th percentile.
    """
    lens = np.asarray(lengths, dtype=float).ravel()
    out: dict[str, float | None] = {"mean": None, "median": None, "p90": None}
    if lens.size:
        out["mean"] = float(lens.mean())
        out["median"] = float(np.median(lens))
        out["p90"] = float(np.percentile(lens, 90))
    out["correct_mean"] = out["incorrect_mean"] = None
    if correct is not None:
        corr = np.asarray(correct, dtype=bool).ravel()
        if corr.shape != lens.shape:
            raise ValueError(f"lengths {lens.shape} and correct {corr.shape} differ in shape")
        if corr.any():
            out["correct_mean"] = float(lens[corr].mean())
        if (~corr).any():
            out["incorrect_mean"] = float(lens[~corr].mean())
    out["truncation_rate"] = None
    if truncated is not None:
        trunc = np.asarray(truncated, dtype=bool).ravel()
        if trunc.shape != lens.shape:
            raise ValueError(f"lengths {lens.shape} and truncated {trunc.shape} differ in shape")
        if trunc.size:
            out["truncation_rate"] = float(trunc.mean())
    return out


# ----------------------------------------------------------------------------------------------- bootstrap


def _bootstrap_indices(num: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num, size=(int(n_boot), num))


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentiles alpha/2 and 1-alpha/2 of the bootstrap statistics; NaNs dropped, infs kept (nearest rank)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    method = "linear" if np.isfinite(values).all() else "nearest"
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)], method=method)
    return float(low), float(high)


def bootstrap_ci(
    per_problem_values: Sequence[float] | np.ndarray,
    statistic: Callable[..., Any] = np.mean,
    n_boot: int = N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of `statistic` over problems (Efron & Tibshirani 1993, ch. 13).

    Resamples the P per-problem values with replacement n_boot times. `statistic` is called as
    statistic(matrix, axis=1) when it accepts `axis` (numpy reductions), else once per resample.
    Empty input gives (nan, nan); non-finite bootstrap statistics are ignored.
    """
    vals = np.asarray(per_problem_values, dtype=float).ravel()
    if vals.size == 0:
        return float("nan"), float("nan")
    resampled = vals[_bootstrap_indices(vals.size, n_boot, seed)]
    try:
        stats = np.asarray(statistic(resampled, axis=1), dtype=float)
        if stats.shape != (resampled.shape[0],):
            raise TypeError
    except TypeError:
        stats = np.array([float(statistic(row)) for row in resampled])
    return _percentile_interval(stats, alpha)


def wilson_interval(p_hat: float, trials: float, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson's score interval for a proportion p_hat observed over `trials` independent trials (Wilson 1927).

    center = (p + z^2/2t) / (1 + z^2/t), half-width = z sqrt(p(1-p)/t + z^2/4t^2) / (1 + z^2/t), z the normal
    1 - alpha/2 quantile. Unlike the Wald or percentile-bootstrap interval it is never [0, 0] at p = 0.

    >>> [round(x, 4) for x in wilson_interval(0.0, 200)]
    [0.0, 0.0188]
    """
    from statistics import NormalDist

    if trials <= 0 or not np.isfinite(p_hat):
        return float("nan"), float("nan")
    p = min(1.0, max(0.0, float(p_hat)))
    z = NormalDist().inv_cdf(1 - alpha / 2)
    z2t = z * z / trials
    center = (p + z2t / 2) / (1 + z2t)
    half = z * math.sqrt(p * (1 - p) / trials + z2t / (4 * trials)) / (1 + z2t)
    return max(0.0, center - half), min(1.0, center + half)


def proportion_interval(per_problem: np.ndarray, n: int, idx: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Interval of the mean of per-problem proportions in [0, 1] (the rule in the module docstring): Wilson over the
    P problems when n = 1 or when the bootstrap (problems resampled by `idx`) has collapsed to one point, else the
    percentile bootstrap. No resamples (n_boot = 0) means no interval."""
    P = per_problem.size
    if P == 0 or idx.shape[0] == 0:
        return float("nan"), float("nan")
    if n == 1 or np.all(per_problem == per_problem[0]):
        return wilson_interval(float(per_problem.mean()), P, alpha)
    return _percentile_interval(per_problem[idx].mean(axis=1), alpha)


def _ratio_ci(
    num: np.ndarray, den: np.ndarray, idx: np.ndarray, alpha: float, zero_den: float = float("nan")
) -> tuple[float, float]:
    """Interval of sum(num)/sum(den) with problems resampled by `idx`; a resample with sum(den)=0 scores `zero_den`
    (NaN = dropped, as for a length mean with no correct samples; inf for cost-of-pass with no correct sample)."""
    n_sum = num[idx].sum(axis=1)
    d_sum = den[idx].sum(axis=1)
    ratios = np.where(d_sum > 0, n_sum / np.where(d_sum > 0, d_sum, 1.0), zero_den)
    return _percentile_interval(ratios, alpha)


def _matrix(name: str, values: Any, shape: tuple[int, int], dtype: Any = float) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape} (problems x samples)")
    return arr


def default_ks(n: int) -> list[int]:
    """Powers of two up to n, plus n itself: n=10 -> [1, 2, 4, 8, 10]."""
    ks = [1 << i for i in range(max(int(n), 1).bit_length()) if (1 << i) <= n]
    if n >= 1 and ks[-1] != n:
        ks.append(int(n))
    return ks


def summarize_problems(
    correct: Any,
    answers: Sequence[Sequence[str | None]] | None = None,
    lengths: Any = None,
    truncated: Any = None,
    costs: Any = None,
    entropy: Any = None,
    entropy_think: Any = None,
    entropy_answer: Any = None,
    ks: Sequence[int] | None = None,
    maj_ks: Sequence[int] | None = None,
    n_boot: int = N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    maj_subsamples: int | None = None,
    tool_calls: Any = None,
    tool_dollars: Any = None,
    turns: Any = None,
    modes: Sequence[Sequence[str | None]] | None = None,
    mode_names: Sequence[str] = (),
    groups: Sequence[str | None] | None = None,
    prefix: str = "eval",
) -> dict[str, float | None]:
    """Flat metric dict for `rl eval` from per-sample arrays of shape (P problems, n samples).

    Keys (only for inputs that are given):
      eval/accuracy, eval/pass@{k} for k in ks (default: powers of two <= n plus n; k > n is skipped),
      eval/maj@{k} for k in maj_ks (default [n]; needs `answers`),
      eval/length/{mean,median,p90,correct_mean,incorrect_mean}, eval/truncation_rate,
      eval/entropy/{mean,think,answer} (per-sample mean token entropies; NaN entries ignored),
      eval/cost/mean (per attempt), eval/cost_of_pass (total cost / total correct; inf if none correct),
      eval/tools/calls_per_problem (tool calls per attempt), eval/tools/dollars_mean ($ of tool calls per attempt),
      eval/turns/mean (assistant turns per attempt) from `tool_calls`, `tool_dollars`, `turns`,
      eval/modes/<mode> for each of `mode_names` and eval/modes/none (share of attempts declaring it; `modes` holds
      each sample's mode or None),
      eval/by/<group>/{accuracy, cost/mean, cost_of_pass, tools/calls_per_problem, modes/...} for each distinct
      per-problem label in `groups` (e.g. difficulty; problems labelled None are in no group): the same statistics
      on that group's problems alone, with their own intervals.
    `prefix` replaces "eval" in every key.
    Every metric except length median/p90 also gets "<key>/ci_low" and "<key>/ci_high": a percentile
    bootstrap over problems (all statistics of one resample share the same problem indices), or for the
    proportions (accuracy, pass@k, maj@k, truncation rate) `proportion_interval` (Wilson where n = 1 or where
    the bootstrap collapses to a point). Per-problem
    values are pass_at_k(n, c_p, k), maj_at_k(answers_p, correct_p, k) and the problem's accuracy; pooled
    statistics (length, entropy, cost, tool calls, turns) are recomputed as ratios of per-problem sums; mode shares
    are proportions (a per-problem share of samples, like accuracy). Values that are
    undefined (e.g. no correct samples for length/correct_mean) are None; eval/cost_of_pass (and its CI
    bounds) may be inf, which the caller must make JSON-safe.
    """
    corr = np.asarray(correct, dtype=bool)
    if corr.ndim != 2:
        raise ValueError(f"correct must be a (problems, samples) matrix, got shape {corr.shape}")
    P, n = corr.shape
    shape = (P, n)
    out: dict[str, float | None] = {}
    idx = _bootstrap_indices(P, n_boot, seed) if P > 0 else np.zeros((0, 0), dtype=np.int64)

    def put(key: str, value: float | None, ci: tuple[float, float] | None) -> None:
        key = f"{prefix}/{key}"
        out[key] = _nan_to_none(value)
        if ci is not None:
            out[key + "/ci_low"], out[key + "/ci_high"] = _nan_to_none(ci[0]), _nan_to_none(ci[1])

    def per_problem(key: str, values: np.ndarray) -> None:
        """A proportion: the mean over problems of a per-problem value in [0, 1]."""
        if P == 0:
            put(key, None, (float("nan"), float("nan")))
            return
        put(key, float(values.mean()), proportion_interval(values, n, idx, alpha))

    def pooled_ratio(key: str, num: np.ndarray, den: np.ndarray) -> None:
        """sum(num)/sum(den) over problems, with num/den per-problem sums."""
        total_den = den.sum()
        value = float(num.sum() / total_den) if total_den > 0 else float("nan")
        put(key, value, _ratio_ci(num, den, idx, alpha) if P > 0 else (float("nan"), float("nan")))

    c_per_problem = corr.sum(axis=1)
    per_problem("accuracy", corr.mean(axis=1) if n > 0 else np.zeros(P))
    for k in ks if ks is not None else default_ks(n):
        if 1 <= k <= n:
            per_problem(f"pass@{k}", np.array([pass_at_k(n, c, k) for c in c_per_problem]))

    if answers is not None:
        if len(answers) != P or any(len(row) != n for row in answers):
            raise ValueError(f"answers must be {P} lists of {n} answers")
        rng = np.random.default_rng(seed)
        for k in maj_ks if maj_ks is not None else ([n] if n else []):
            if 1 <= k <= n:
                vals = np.array(
                    [maj_at_k(list(answers[p]), corr[p].tolist(), k, maj_subsamples, rng) for p in range(P)]
                )
                per_problem(f"maj@{k}", vals)

    if lengths is not None:
        lens = _matrix("lengths", lengths, shape)
        stats = length_stats(lens.ravel(), corr.ravel())
        ones = np.full(P, float(n))
        pooled_ratio("length/mean", lens.sum(axis=1), ones)
        put("length/median", stats["median"], None)
        put("length/p90", stats["p90"], None)
        pooled_ratio("length/correct_mean", (lens * corr).sum(axis=1), c_per_problem.astype(float))
        pooled_ratio("length/incorrect_mean", (lens * ~corr).sum(axis=1), (n - c_per_problem).astype(float))
    if truncated is not None:
        trunc = _matrix("truncated", truncated, shape, dtype=bool)
        # every problem has n samples, so the pooled rate is the mean of the per-problem rates: a proportion
        per_problem("truncation_rate", trunc.mean(axis=1) if n > 0 else np.zeros(P))

    for key, ent in (("mean", entropy), ("think", entropy_think), ("answer", entropy_answer)):
        if ent is not None:
            e = _matrix(f"entropy_{key}", ent, shape)
            finite = np.isfinite(e)
            pooled_ratio(f"entropy/{key}", np.where(finite, e, 0.0).sum(axis=1), finite.sum(axis=1).astype(float))

    if costs is not None:
        cost = _matrix("costs", costs, shape)
        pooled_ratio("cost/mean", cost.sum(axis=1), np.full(P, float(n)))
        cop = cost_of_pass(cost.ravel(), corr.ravel())
        ci = (
            _ratio_ci(cost.sum(axis=1), c_per_problem.astype(float), idx, alpha, zero_den=float("inf"))
            if P > 0
            else (float("nan"), float("nan"))
        )
        put("cost_of_pass", cop, ci)

    attempts = np.full(P, float(n))
    for key, values in (("tools/calls_per_problem", tool_calls), ("tools/dollars_mean", tool_dollars),
                        ("turns/mean", turns)):
        if values is not None:
            pooled_ratio(key, _matrix(key, values, shape).sum(axis=1), attempts)

    if modes is not None and mode_names:
        if len(modes) != P or any(len(row) != n for row in modes):
            raise ValueError(f"modes must be {P} lists of {n} modes")
        for mode in (*mode_names, None):
            share = np.array([sum(m == mode for m in row) / n if n else 0.0 for row in modes], dtype=float)
            per_problem(f"modes/{mode or 'none'}", share)

    if groups is not None:
        if len(groups) != P:
            raise ValueError(f"groups must hold one label per problem ({P}), got {len(groups)}")
        for label in sorted({str(g) for g in groups if g is not None}):
            sel = [p for p in range(P) if groups[p] is not None and str(groups[p]) == label]

            def pick(values: Any) -> Any:
                return None if values is None else np.asarray(values, dtype=float)[sel]

            out.update(summarize_problems(
                corr[sel], costs=pick(costs), tool_calls=pick(tool_calls),
                modes=[modes[p] for p in sel] if modes is not None else None, mode_names=mode_names,
                ks=[], n_boot=n_boot, alpha=alpha, seed=seed, prefix=f"{prefix}/by/{label}"))
    return out
