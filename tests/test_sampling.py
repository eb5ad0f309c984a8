"""workbench.sampling: the sampler extension point, Knapsack RL's allocation against the authors' function
(liziniu/KnapsackRL `sampling_budget_by_knapsack` + `solve_by_dp`, transcribed below as `knapsack_reference`), the
cheap group form, A²FM APO's mode forcing, configs one to one with the registry."""

import math
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from workbench.config import ConfigError
from workbench.sampling import (
    APO,
    COMPLETION_PREFIX,
    SAMPLERS,
    Knapsack,
    build_samplers,
    knapsack_budget,
    observe_rows,
    plan_rows,
    with_instruction,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "sampler"


def knapsack_reference(rates, n, min_n, max_n, negative_n, positive_n, alpha=0.9):
    """A transcription of the authors' `sampling_budget_by_knapsack` (cost_estimation "probability",
    allow_fallback, solver "dp", the non-numba DP of `solve_by_dp`); rates None = not seen (validity 0)."""
    B = len(rates)
    budget = [0] * B
    costs = [0.0] * B
    sr = [0.0] * B
    eff = []
    for i, p in enumerate(rates):
        if p is not None:
            if 0 < p < 1:
                costs[i] = math.log(1 - alpha) / math.log(max(p, 1 - p))
                budget[i] += min_n
                eff.append(i)
            elif p == 0:
                costs[i] = float("inf")
                budget[i] += negative_n
            else:
                budget[i] += positive_n
            sr[i] = p
        else:
            budget[i] += n
    total = B * n - sum(budget)
    if total > 0 and not eff:
        zeros = [i for i in range(B) if sr[i] == 0]  # np.where(success_rates == 0): unseen rows too (sr left 0)
        if zeros:
            for j, i in enumerate(zeros):
                budget[i] += total // len(zeros) + (1 if j < total % len(zeros) else 0)
        else:
            budget = [n] * B
        return budget
    est = sum(int(min(max_n, costs[i])) for i in eff)
    if est < total:
        zeros = [i for i in range(B) if sr[i] == 0]
        cand = zeros if zeros else [i for i in range(B) if i not in eff]
        ab = total - est
        for j, i in enumerate(cand):
            budget[i] += ab // len(cand) + (1 if j < ab % len(cand) else 0)
        total = est
    extra = [0] * B
    if total > 0:
        mx = max_n - min_n
        dp = [[-math.inf] * (total + 1) for _ in range(len(eff) + 1)]
        dp[0][0] = 0.0
        ch = [[[-1, -1] for _ in range(total + 1)] for _ in range(len(eff) + 1)]
        for i in range(1, len(eff) + 1):
            p = sr[eff[i - 1]]
            for w in range(total + 1):
                if dp[i - 1][w] > dp[i][w]:
                    dp[i][w] = dp[i - 1][w]
                    ch[i][w] = [0, 0]
                for k in range(1, min(mx + 1, w + 1)):
                    if dp[i - 1][w - k] == -math.inf:
                        continue
                    gain = (1 - p ** (k + min_n) - (1 - p) ** (k + min_n)) * p * (1 - p) ** 2
                    if dp[i - 1][w - k] + gain > dp[i][w]:
                        dp[i][w] = dp[i - 1][w - k] + gain
                        ch[i][w] = [i - 1, k]
        usable = total
        while usable > 0 and dp[len(eff)][usable] == -math.inf:
            usable -= 1
        if usable > 0:
            w = usable
            for i in range(len(eff), 0, -1):
                idx, k = ch[i][w]
                if k > 0:
                    extra[eff[idx]] += k
                    w -= k
            rest = total - usable
        else:
            rest = total
        if rest > 0:
            for i in eff:
                extra[i] += rest // len(eff)
            for i in eff[: rest % len(eff)]:
                extra[i] += 1
    return [b + e for b, e in zip(budget, extra)]


CASES = [
    # mixed, unseen, all-wrong, all-right prompts at the authors' defaults (n 8, min_n 2, max_n 128)
    ([None, 0.0, 1.0, 0.5, 0.25, 0.9], dict(n=8, min_n=2, max_n=128, negative_n=2, positive_n=2)),
    # easy mixed prompts need few rollouts: the excess goes to the p = 0 prompts (the leftover rule)
    ([0.5, 0.5, 0.0, 0.0, 1.0, 0.4], dict(n=8, min_n=2, max_n=128, negative_n=2, positive_n=2)),
    # leftover without any p = 0 prompt: to the other unmixed ones
    ([0.5, 1.0, None, 0.45], dict(n=8, min_n=2, max_n=128, negative_n=2, positive_n=2)),
    # a tight max_n (the DP cannot place it all; the rest is spread over the mixed prompts)
    ([0.1, 0.05, 0.2, 0.97], dict(n=8, min_n=2, max_n=6, negative_n=2, positive_n=2)),
    # no mixed prompt at all
    ([0.0, 1.0, 1.0, 0.0], dict(n=8, min_n=2, max_n=128, negative_n=2, positive_n=2)),
    ([1.0, 1.0], dict(n=4, min_n=2, max_n=16, negative_n=1, positive_n=1)),
]


@pytest.mark.parametrize("rates,kw", CASES)
def test_knapsack_budget_matches_authors(rates, kw):
    got = knapsack_budget(rates, **kw)
    assert got == knapsack_reference(rates, **kw)
    assert sum(got) == len(rates) * kw["n"]


def test_knapsack_budget_random_cases_match_authors():
    rng = random.Random(0)
    for _ in range(40):
        rates = [rng.choice([None, 0.0, 1.0, round(rng.uniform(0.02, 0.98), 3)]) for _ in range(rng.randint(1, 7))]
        kw = dict(n=rng.choice([4, 8]), min_n=2, max_n=rng.choice([4, 16, 128]), negative_n=2, positive_n=2)
        assert knapsack_budget(rates, **kw) == knapsack_reference(rates, **kw), (rates, kw)


def test_knapsack_gives_hard_mixed_prompts_more():
    b = knapsack_budget([0.5, 0.1, 0.9, 0.5], n=8, min_n=2, max_n=128, negative_n=2, positive_n=2)
    # the value's p (1 - p)^2 weighs hard prompts (low p) above easy ones: the hard one gets the most
    assert b[1] > b[0] > b[2] and b[0] == b[3]


def rows_of(ids, G):
    return [{"prompt": f"q{i}", "id": i} for i in ids for _ in range(G)]


class FakeRollouts:
    def __init__(self, correct, modes=None):
        self.correct = torch.tensor(correct, dtype=torch.float)
        self.modes = modes


def test_knapsack_sampler_regroups_by_success_rate_and_keeps_state():
    G = 4
    s = Knapsack(revisit=0.0)
    rows = rows_of([0, 1, 2, 3], G)
    first = s.plan(rows, G, 0, random.Random(0))
    assert first == rows  # nothing known yet: every prompt keeps its group
    # prompt 0 all right, 1 all wrong, 2 half right, 3 one in four
    s.observe(FakeRollouts([1] * 4 + [0] * 4 + [1, 0, 1, 0] + [1, 0, 0, 0]), first)
    assert s.rates == {"0": 1.0, "1": 0.0, "2": 0.5, "3": 0.25}
    out = s.plan(rows, G, 1, random.Random(0))
    ids = [r["id"] for r in out]
    assert len(out) == len(rows)
    assert 0 not in ids and 1 not in ids  # unmixed prompts dropped (revisit 0)
    assert all(len(set(ids[i : i + G])) == 1 for i in range(0, len(ids), G))  # whole groups
    assert ids.count(2) + ids.count(3) == 16 and ids.count(2) >= G and ids.count(3) >= G
    m = s.metrics()
    assert m["mixed_prompts"] == 0.5 and m["dropped_prompts"] == 2 and m["extra_groups"] == 2
    restored = Knapsack()
    restored.load_state_dict(s.state_dict())
    assert restored.rates == s.rates


def test_knapsack_revisit_keeps_unmixed_prompts_measured():
    G = 2
    s = Knapsack(revisit=1.0)
    s.rates = {"0": 1.0, "1": 0.0}
    out = s.plan(rows_of([0, 1], G), G, 0, random.Random(0))
    assert sorted({r["id"] for r in out}) == [0, 1]


def test_apo_forces_modes_and_measures_compliance():
    class Task:
        modes = ("instant", "reasoning", "agentic")

    G = 8
    s = APO(per_mode=2)
    s.bind_task(Task())
    rows = rows_of([0, 1], G)
    out = plan_rows([s], rows, G, step=0, seed=0)
    forced = [r["forced_mode"] for r in out[:G]]
    assert forced == ["instant"] * 2 + ["reasoning"] * 2 + ["agentic"] * 2 + [None] * 2
    assert [r[COMPLETION_PREFIX] for r in out[1:4]] == ["[instant]", "[reasoning]", "[reasoning]"]
    assert out[7][COMPLETION_PREFIX] is None and all(r["prompt"] == "q0" for r in out[:G])
    assert "forced_mode" not in rows[0]  # the input rows untouched
    by_prompt = APO(per_mode=1, force="prompt")
    by_prompt.bind_task(Task())
    out_p = by_prompt.plan(rows, G, 0, random.Random(0))
    assert out_p[1]["prompt"] == "q0\nStart with [reasoning]." and out_p[3]["prompt"] == "q0"
    assert COMPLETION_PREFIX not in out_p[1]
    modes = (["instant", "reasoning"] + ["reasoning"] * 2 + ["agentic", None] + ["agentic"] * 2) * 2
    metrics = observe_rows([s], FakeRollouts([1] * 16, modes), out)
    assert metrics["sampler/apo/compliance"] == pytest.approx(4 / 6)
    assert metrics["sampler/apo/free_agentic"] == 1.0 and metrics["sampler/apo/forced_share"] == 0.75


def test_apo_errors():
    class NoModes:
        modes = ()

    with pytest.raises(ConfigError, match="task with modes"):
        APO().bind_task(NoModes())

    class Task:
        modes = ("instant", "agentic")

    with pytest.raises(ConfigError, match="valid: instant, agentic"):
        APO(modes=["fast"]).bind_task(Task())
    s = APO(per_mode=3)
    s.bind_task(Task())
    with pytest.raises(ConfigError, match="num_generations=4"):
        s.plan(rows_of([0], 4), 4, 0, random.Random(0))


def test_with_instruction_chat_and_text():
    assert with_instruction("a", "b") == "a\nb"
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert with_instruction(msgs, "b")[-1] == {"role": "user", "content": "u\nb"} and msgs[-1]["content"] == "u"


def test_build_samplers_errors_name_key_and_choices():
    with pytest.raises(ConfigError, match="sampler.nope: unknown sampler; valid: aepo, apo, knapsack"):
        build_samplers({"nope": {}})
    with pytest.raises(ConfigError, match="sampler.knapsack.bogus"):
        build_samplers({"knapsack": {"bogus": 1}})
    with pytest.raises(ConfigError, match="sampler.knapsack"):
        build_samplers({"knapsack": {"alpha": 1.5}})
    with pytest.raises(ConfigError, match="choose one of: decode, prompt"):
        build_samplers({"apo": {"force": "magic"}})


def test_plan_rows_refuses_wrong_length():
    class Bad(Knapsack):
        def plan(self, rows, group_size, step, rng):
            return rows[:-1]

    with pytest.raises(RuntimeError, match="returned 3 rows"):
        plan_rows([Bad()], rows_of([0, 1], 2), 2, 0, 0)


def test_conf_files_one_to_one_and_build():
    files = {p.stem: p for p in CONF.glob("*.yaml")}
    assert set(files) == set(SAMPLERS)
    for name, path in files.items():
        (sampler,) = build_samplers(OmegaConf.to_container(OmegaConf.load(path)))
        assert sampler.name == name


def aepo_reference(advantages, entropy, entropy_base, reinforce_sample_num, threshold=0.05):
    """The authors' AEPO branch (ray_trainer.fit) on the second batch: `_select_by_advantage(batch_bak, 0.05,
    absolute=False)` keeps rows with advantages[:, 0] > threshold in order; sample_num as in the loop."""
    selected = (advantages[:, 0] > threshold).nonzero(as_tuple=False).squeeze(-1).tolist()
    if entropy <= entropy_base:
        n = min(reinforce_sample_num, len(selected))
    else:
        n = min(reinforce_sample_num, len(selected)) // 2
    return selected[:n]


@pytest.mark.parametrize("entropy", [0.0, 0.5, 0.7])
@pytest.mark.parametrize("sample_num", [0, 1, 3, 60])
def test_aepo_positives_match_authors(entropy, sample_num):
    from workbench.sampling import AEPO

    adv = torch.tensor([0.3, -1.0, 0.05, 0.06, 1.2, 0.0, 0.9, -0.2]).unsqueeze(1).expand(-1, 5)
    s = AEPO(sample_num=sample_num)
    t = s.second_temperature(entropy)
    assert t == (1.2 if entropy <= 0.5 else 0.8)
    assert s.positives(adv, entropy) == aepo_reference(adv, entropy, 0.5, sample_num)
    m = s.metrics()
    assert m["positives"] == 4 / 8 and m["temperature"] == t and s.metrics() == {}  # filed once


def test_splice_rows_pads_prompts_left_and_completions_right():
    from workbench.sampling import splice_rows

    batch = {"prompt_ids": torch.tensor([[9, 1, 2], [9, 3, 4], [5, 6, 7]]),
             "prompt_mask": torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1]]),
             "completion_ids": torch.tensor([[1, 9], [2, 9], [3, 4]]),
             "completion_mask": torch.tensor([[1, 0], [1, 0], [1, 1]]),
             "advantages": torch.tensor([0.5, -0.5, 0.0]), "num_items_in_batch": torch.tensor(4)}
    extra = {"prompt_ids": torch.tensor([[8], [7]]), "prompt_mask": torch.tensor([[1], [1]]),
             "completion_ids": torch.tensor([[5, 5, 5, 5], [6, 6, 9, 9]]),
             "completion_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
             "advantages": torch.tensor([1.0, 1.0])}
    out = splice_rows(batch, extra, [1], pad_id=9)
    assert out["prompt_ids"].tolist() == [[9, 9, 7], [9, 3, 4], [5, 6, 7]]
    assert out["prompt_mask"].tolist() == [[0, 0, 1], [0, 1, 1], [1, 1, 1]]
    assert out["completion_ids"].tolist() == [[6, 6, 9, 9], [2, 9, 9, 9], [3, 4, 9, 9]]
    assert out["completion_mask"].tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]]
    assert out["advantages"].tolist() == [1.0, -0.5, 0.0]
    assert splice_rows(batch, extra, [], 9)["completion_ids"] is batch["completion_ids"]
    with pytest.raises(ValueError, match="unknown per-row key 'pixel_values'"):
        splice_rows({**batch, "pixel_values": torch.zeros(3, 2)}, {**extra, "pixel_values": torch.zeros(2, 2)}, [0], 9)
