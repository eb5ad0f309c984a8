"""ARES (card 12) and EMPO (card 17) against transcriptions of their authors' functions, on hand-made inputs.

References (transcribed below, numpy as there, logging and vLLM parts left out):
* ARES: shawn0728/ARES ``examples/reward_function/aepo.py::compute_score`` (and its ``_huber_penalty``,
  ``_sigmoid_saturate``, ``_margin_from_target``); ``verl/workers/rollout/vllm_rollout_spmd.py::
  compute_reasoning_token_window_entropy`` and ``get_window_average_entropy_percentile_threshold_list`` from the
  point where the per-token entropies and token strings exist; ``verl/trainer/ray_trainer.py::fit`` (the threshold's
  median + EMA) and ``update_difficulty_and_skip_gid_set`` (buckets, targets, the alpha step).
* EMPO: QingyangZhang/EMPO ``src/open_r1/rewards.py::get_empo_math_reward`` (one group) with
  ``get_semantic_ids_by_rule``, the rule being string equality that never holds for an empty answer.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from workbench.rollouts import Rollouts
from workbench.shaping import build_terms

# ----------------------------------------------------------------------------------------------- ARES reference


def _huber_penalty(x, kappa):
    x = max(float(x), 0.0)
    return 0.5 * x * x / kappa if x <= kappa else x - 0.5 * kappa


def _sigmoid_saturate(x, temp):
    t = max(float(temp), 1e-6)
    return 1.0 / (1.0 + math.exp(-x / t))


def _margin_from_target(target, frac, min_margin=1.0):
    return max(min_margin, frac * max(float(target), 1.0))


def ares_score_reference(accuracy_score, difficulty, gen_token_num, target_token_num, alpha_entropy_sample):
    """compute_score's entropy part for one reward input."""
    MARGIN_FRAC = {"easy": 0.15, "medium": 0.25, "hard": 0.35}
    KAPPA = {"easy": 2.0, "medium": 3.0, "hard": 4.0}
    TEMP = {"easy": 2.0, "medium": 2.5, "hard": 3.0}
    CAP_SCALE = {"easy": 1.0, "medium": 1.0, "hard": 1.2}
    delta = gen_token_num - target_token_num
    margin = _margin_from_target(target_token_num, MARGIN_FRAC.get(difficulty, 0.2), min_margin=1.0)
    kappa, temp = KAPPA.get(difficulty, 2.0), TEMP.get(difficulty, 2.0)
    cap = alpha_entropy_sample * CAP_SCALE.get(difficulty, 1.0)
    entropy_score = 0.0
    if difficulty in ("easy", "medium"):
        if accuracy_score == 1.0:
            if difficulty == "easy":
                pen = _huber_penalty(max(delta - margin, 0.0), kappa)
            else:
                pen = _huber_penalty(max(abs(delta) - margin, 0.0), kappa)
            entropy_score = -min(cap, pen / (margin + kappa) * cap)
        else:
            over = max(delta - margin, 0.0)
            entropy_score = _sigmoid_saturate(over, temp) * cap * (0.6 if difficulty == "easy" else 0.8)
    elif difficulty == "hard":
        if accuracy_score == 1.0:
            if delta >= -margin:
                entropy_score = _sigmoid_saturate(delta - (-margin), temp) * cap
            else:
                pen = _huber_penalty((-delta) - margin, kappa)
                entropy_score = -min(cap, 0.5 * pen / (margin + kappa) * cap)
        else:
            entropy_score = _sigmoid_saturate(max(delta - margin, 0.0), temp) * cap
    return float(entropy_score)


def window_count_reference(token_entropies, token_strs, threshold, reasoning_token_set, window_size=4):
    valid = 0
    for i, tok in enumerate(token_strs):
        if tok in reasoning_token_set:
            if len(token_entropies) - i - 1 >= window_size:
                if float(np.mean(token_entropies[i + 1 : i + 1 + window_size])) >= threshold:
                    valid += 1
    return valid


def window_threshold_reference(token_entropies, percentile=98.0, window_size=8):
    values = []
    for i in range(len(token_entropies)):
        if len(token_entropies) - i - 1 >= window_size:
            values.append(float(np.mean(token_entropies[i + 1 : i + 1 + window_size])))
        elif values:
            values.append(np.mean(values))
        else:
            values.append(token_entropies[i])
    return np.percentile(values, percentile) if values else 0.0


class AresTrainerReference:
    """The trainer's state: threshold EMA, per-bucket alpha and target (ray_trainer.fit / update_difficulty...)."""

    def __init__(self):
        self.alpha = {"easy": 0.5, "medium": 0.5, "hard": 0.5}
        self.target = {}
        self.threshold = None

    def step(self, entropies, strs, acc, G, triggers):
        thresholds = [window_threshold_reference(h) for h in entropies]
        batch_p = float(np.median(thresholds))
        theta = batch_p if self.threshold is None else self.threshold  # the generation-time threshold
        self.threshold = batch_p if self.threshold is None else 0.99 * self.threshold + 0.01 * batch_p
        n = [window_count_reference(h, s, theta, triggers) for h, s in zip(entropies, strs)]
        info = defaultdict(lambda: {"acc": [], "num": []})
        for i, (a, k) in enumerate(zip(acc, n)):
            info[i // G]["acc"].append(a)
            info[i // G]["num"].append(k)
        difficulty, bucket = {}, defaultdict(list)
        for gid, x in info.items():
            rate = np.mean(x["acc"])
            d = "easy" if rate >= 2 / 3 else "medium" if rate >= 1 / 3 else "hard"
            difficulty[gid] = d
            bucket[d].append(np.mean(x["num"]))
        for d, values in bucket.items():
            self.target[d] = round(1.0 * np.mean(values))
        for d, values in bucket.items():
            mean_gen = float(np.mean(values))
            target = float(self.target.get(d, mean_gen))
            delta = mean_gen - target if d in ("easy", "medium") else target - mean_gen
            self.alpha[d] = float(np.clip(self.alpha[d] + 0.05 * delta, 0.0, 2.0))
        scores = []
        for i in range(len(acc)):
            d = difficulty[i // G]
            scores.append(ares_score_reference(float(acc[i]), d, float(n[i]), float(self.target[d]), self.alpha[d]))
        return scores, n, theta


# ----------------------------------------------------------------------------------------------- ARES tests

TRIGGER_IDS = {3, 7}


def ares_batch(seed, B=12, G=4):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 24, (B,), generator=g)
    lengths[0] = 4  # shorter than the threshold window: the fill rule
    T = int(lengths.max())
    ids = [torch.randint(0, 10, (int(n),), generator=g).tolist() for n in lengths]
    H = torch.rand(B, T, generator=g).double() * 2
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    H = H * mask
    # groups: 3/4 correct (easy), 2/4 (medium), 1/4 (hard)
    correct = torch.tensor([1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 0], dtype=torch.float32)[:B]
    r = Rollouts(completions=["x"] * B, completion_ids=ids, lengths=lengths, prompt_lengths=torch.full((B,), 2),
                 truncated=torch.zeros(B, dtype=torch.bool), correct=correct, group_size=G,
                 prompt_keys=[i // G for i in range(B)], max_completion_length=T, mask=mask.float(),
                 entropies=H.float())
    entropies = [H[i, : int(lengths[i])].float().double().tolist() for i in range(B)]
    strs = [["wait" if t in TRIGGER_IDS else "x" for t in row] for row in ids]
    return r, entropies, strs, correct.tolist()


def test_ares_matches_the_authors_reward_over_steps():
    (term,) = build_terms("reward", {"ares_entropy": {"trigger_ids": sorted(TRIGGER_IDS), "triggers": []}})
    ref = AresTrainerReference()
    worst = 0.0
    for step in range(3):
        r, entropies, strs, acc = ares_batch(step)
        want, n, theta = ref.step(entropies, strs, acc, 4, {"wait"})
        got = term(r)
        worst = max(worst, float((got.double() - torch.tensor(want)).abs().max()))
        assert got.tolist() == pytest.approx(want, abs=1e-6), step
        m = term.metrics()
        assert m["hwe_count"] == pytest.approx(float(np.mean(n)))
        assert m["threshold"] == pytest.approx(theta, abs=1e-6)
        assert {k: m[f"alpha_{k}"] for k in ref.alpha} == pytest.approx(ref.alpha)
        assert term.threshold == pytest.approx(ref.threshold, abs=1e-6)
    assert worst < 1e-6 and any(abs(x) > 0 for x in want)


def test_ares_scores_match_compute_score_on_a_grid():
    from workbench.shaping.reward_entropy import ares_entropy_score

    for bucket in ("easy", "medium", "hard"):
        for correct in (True, False):
            for target in (0.0, 1.0, 4.0, 10.0):
                for n in range(0, 20):
                    for alpha in (0.0, 0.5, 1.7):
                        assert ares_entropy_score(n, target, alpha, bucket, correct) == pytest.approx(
                            ares_score_reference(1.0 if correct else 0.0, bucket, float(n), target, alpha), abs=1e-12)


def test_ares_alpha_moves_by_the_rounding_residual_and_state_survives_json():
    (term,) = build_terms("reward", {"ares_entropy": {"trigger_ids": sorted(TRIGGER_IDS), "triggers": []}})
    r, *_ = ares_batch(5)
    term(r)
    assert all(abs(a - 0.5) <= 0.5 * 0.05 + 1e-12 for a in term.alpha.values())
    state = json.loads(json.dumps(term.state_dict()))
    (fresh,) = build_terms("reward", {"ares_entropy": {"trigger_ids": sorted(TRIGGER_IDS), "triggers": []}})
    fresh.load_state_dict(state)
    r2, *_ = ares_batch(6)
    assert torch.equal(fresh(r2), term(r2))


class WordTokenizer:
    """Decodes id 3 as 'ĠWait', id 7 as '▁But', everything else as a digit."""

    def decode(self, ids):
        return {3: "ĠWait", 7: "▁But"}.get(ids[0], str(ids[0]))


def test_ares_triggers_by_decoded_word_equal_triggers_by_id():
    by_word = build_terms("reward", {"ares_entropy": {"triggers": ["wait", "BUT"]}})[0]
    by_word.bind_tokenizer(WordTokenizer())
    by_id = build_terms("reward", {"ares_entropy": {"trigger_ids": [3, 7], "triggers": []}})[0]
    r, *_ = ares_batch(1)
    assert torch.equal(by_word(r), by_id(r)) and by_word.metrics()["hwe_count"] > 0
    untrained = build_terms("reward", {"ares_entropy": {}})[0]  # no tokenizer, no ids: nothing is a trigger
    untrained(r)
    assert untrained.metrics()["hwe_count"] == 0.0


def test_ares_needs_entropies():
    (term,) = build_terms("reward", {"ares_entropy": {}})
    r, *_ = ares_batch(0)
    r.entropies = None
    with pytest.raises(ValueError, match="entropy"):
        term(r)


# ----------------------------------------------------------------------------------------------- EMPO


def equal_rule(a, b):
    return a != "" and a == b


def get_semantic_ids_by_rule(strings_list, rule):
    semantic_set_ids = [-1] * len(strings_list)
    next_id = 0
    for i, string1 in enumerate(strings_list):
        if semantic_set_ids[i] == -1:
            semantic_set_ids[i] = next_id
            for j in range(i + 1, len(strings_list)):
                if rule(string1, strings_list[j]):
                    semantic_set_ids[j] = next_id
            next_id += 1
    return semantic_set_ids


def empo_math_reference(predictions):
    """get_empo_math_reward's inner loop on one group of extracted predictions ('' = no answer)."""
    semantic_ids = get_semantic_ids_by_rule(predictions, rule=equal_rule)
    n_generations = len(semantic_ids)
    probabilities = np.bincount(semantic_ids) / n_generations
    total_entropy = -(probabilities * np.log(probabilities)).sum()
    rewards = []
    for index in range(len(predictions)):
        if total_entropy < math.log(n_generations):
            rewards.append(0.0 if predictions[index] == "" else probabilities[semantic_ids[index]])
        else:
            rewards.append(0.0)
    return rewards, total_entropy


GROUPS = [
    ["4", "4", "4", "5", None, "4", "5"],  # G = 7 as in the recipe
    ["1", "2", "3", "4", "5", "6", "7"],  # all distinct: the entropy threshold zeroes the group
    [None, None, None, "9", "9", None, "8"],  # empty answers never agree with each other
    ["12", "12", "12", "12", "12", "12", "12"],
    ["a b", " a  b ", "ab", None, "ab", "c", "c"],
]


def empo_rollouts(groups):
    answers = [a for g in groups for a in g]
    B, G = len(answers), len(groups[0])
    return Rollouts(completions=["x"] * B, completion_ids=[[1]] * B, lengths=torch.ones(B, dtype=torch.long),
                    prompt_lengths=torch.ones(B, dtype=torch.long), truncated=torch.zeros(B, dtype=torch.bool),
                    correct=torch.zeros(B), group_size=G, prompt_keys=[i // G for i in range(B)],
                    max_completion_length=4, answers=answers)


def test_empo_matches_the_authors_math_reward():
    from workbench.shaping.reward_label_free import normalize_answer

    (term,) = build_terms("reward", {"empo_agreement": {}})
    got = term(empo_rollouts(GROUPS))
    want, entropies = [], []
    for g in GROUPS:
        rewards, h = empo_math_reference([normalize_answer(a) for a in g])
        want += rewards
        entropies.append(h)
    # group 1 (all distinct): the reference compares floats, and -7 (1/7) log(1/7) rounds to 1.9459101090932191
    # < log 7 = 1.9459101090932196, so its threshold lets the group through at 1/7 each; we count classes instead
    assert want[7:14] == pytest.approx([1 / 7] * 7)
    want[7:14] = [0.0] * 7
    assert got.tolist() == pytest.approx(want, abs=1e-7)
    assert term.metrics()["semantic_entropy"] == pytest.approx(float(np.mean(entropies)))
    assert got[:7].tolist() == pytest.approx([4 / 7] * 3 + [2 / 7, 0.0, 4 / 7, 2 / 7])
    assert got[7:14].tolist() == [0.0] * 7 and got[21:28].tolist() == [1.0] * 7


def test_empo_free_form_options_and_missing_signal():
    (term,) = build_terms("reward", {"empo_agreement": {"empty_reward": -0.5, "min_share": 0.5,
                                                        "all_distinct_zero": False}})
    got = term(empo_rollouts(GROUPS)).view(-1, 7)
    assert got[0].tolist() == pytest.approx([4 / 7] * 3 + [2 / 7, -0.5, 4 / 7, 2 / 7])  # largest class 4/7 >= 0.5
    assert got[1].tolist() == [0.0] * 7  # largest class 1/7 < 0.5
    assert got[2].tolist() == [-0.5, -0.5, -0.5, 0.0, 0.0, -0.5, 0.0]  # largest class 2/7 < 0.5
    (veRL,) = build_terms("reward", {"empo_agreement": {"all_distinct_zero": False}})
    assert veRL(empo_rollouts(GROUPS)).view(-1, 7)[1].tolist() == pytest.approx([1 / 7] * 7)
    r = empo_rollouts(GROUPS)
    r.answers = None
    with pytest.raises(ValueError, match="answers"):
        veRL(r)
