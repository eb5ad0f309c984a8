"""The shaping registry against conf/: modules discovered, names one to one with conf files, every conf file builds,
doctests pass, and every term stays finite on the edge cases (all same length, all correct, all wrong, G = 1, no
</think>, zero length, empty mask)."""

import doctest
import importlib
import pkgutil
import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import workbench.shaping as shaping
from workbench.config import ConfigError
from workbench.shaping import import_submodules
from workbench.rollouts import Rollouts
from workbench.shaping.loss_batch import LossBatch
from workbench.shaping.base import KINDS, REGISTRY, RewardTerm, build_terms, register

CONF = Path(__file__).resolve().parents[1] / "conf"


def conf_files(kind, conf=CONF):
    return sorted((conf / kind).glob("*.yaml"))


def conf_mismatch(kind, conf=CONF):
    """(registered names without conf/<kind>/<name>.yaml, conf/<kind> files without a registered term)."""
    names = set(REGISTRY[kind])
    files = {p.stem for p in conf_files(kind, conf)}
    return names - files, files - names


@pytest.mark.parametrize("kind", KINDS)
def test_registry_names_match_conf_files(kind):
    without_yaml, without_term = conf_mismatch(kind)
    assert without_yaml == set(), f"registered {kind} terms without conf/{kind}/<name>.yaml"
    assert without_term == set(), f"conf/{kind} files without a registered term"


ALL_CONF = [p for k in KINDS for p in conf_files(k)]


@pytest.mark.parametrize("path", ALL_CONF, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_conf_file_builds(path):
    kind = path.parent.name
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    assert list(cfg) == [path.stem], f"{path} must hold exactly one key, {path.stem}:"
    (term,) = build_terms(kind, cfg)
    assert term.name == path.stem and term.kind == kind
    assert (type(term).__doc__ or "").strip(), f"{type(term).__name__} has no docstring"


MODULES = [importlib.import_module(f"workbench.shaping.{m.name}") for m in pkgutil.iter_modules(shaping.__path__)]
TERM_MODULES = {cls.__module__ for table in REGISTRY.values() for cls in table.values()}


def test_every_module_of_the_package_is_imported():
    names = {m.name for m in pkgutil.iter_modules(shaping.__path__) if not m.name.startswith("_")}
    assert names <= {n.rsplit(".", 1)[-1] for n in sys.modules if n.startswith("workbench.shaping.")}
    assert {"advantage", "reward_cost", "reward_entropy", "reward_length", "regularizer_entropy", "reward_task", "reward_combine"} <= {
        n.rsplit(".", 1)[-1] for n in TERM_MODULES
    }


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if module.__name__ in TERM_MODULES:  # a module that defines terms shows at least one `>>>` example
        assert result.attempted > 0


# ----------------------------------------------------------------------------------------------- discovery

NEW_MODULE = '''"""A reward term that exists only in this test: one file, no edit anywhere else."""

import torch

from workbench.rollouts import Rollouts
from workbench.shaping.base import RewardTerm, register


@register
class PerToken(RewardTerm):
    """scale x completion tokens."""

    name = "test_per_token"
    needs = frozenset({"lengths"})

    def __init__(self, weight: float = 1.0, scale: float = 0.5):
        super().__init__(weight)
        self.scale = float(scale)

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        return self.scale * rollouts.lengths.float()
'''


@pytest.fixture
def new_term_module(tmp_path, monkeypatch):
    """A module file `test_new_term.py` that sits in the package's search path (as a new file in
    workbench/shaping/ would); the registry and sys.modules are restored afterwards."""
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "test_new_term.py").write_text(NEW_MODULE)
    monkeypatch.setattr(shaping, "__path__", [*shaping.__path__, str(folder)])
    monkeypatch.setitem(REGISTRY, "reward", dict(REGISTRY["reward"]))
    yield "workbench.shaping.test_new_term"
    sys.modules.pop("workbench.shaping.test_new_term", None)
    if hasattr(shaping, "test_new_term"):
        delattr(shaping, "test_new_term")


def test_a_new_module_is_discovered_and_its_term_builds_and_runs(new_term_module, tmp_path):
    assert "test_per_token" not in REGISTRY["reward"]
    assert "test_new_term" in import_submodules(shaping)
    assert new_term_module in sys.modules
    (term,) = build_terms("reward", {"test_per_token": {"scale": 2.0, "weight": 0.5}})
    assert term.weight == 0.5
    r = edge_rollouts([2, 5, 3, 8], [1, 0, 1, 0], 2, [True] * 4)
    assert term(r).tolist() == [4.0, 10.0, 6.0, 16.0]
    import_submodules(shaping)  # again: nothing is imported twice, so no duplicate-name error

    # the one-to-one check flags the term until its yaml exists
    assert conf_mismatch("reward") == ({"test_per_token"}, set())
    conf = tmp_path / "conf"
    shutil.copytree(CONF / "reward", conf / "reward")
    (conf / "reward" / "test_per_token.yaml").write_text(
        "# A test term.\ntest_per_token:\n  # Tokens to reward.\n  scale: 2.0\n"
    )
    assert conf_mismatch("reward", conf) == (set(), set())


def test_registry_fails_loudly(monkeypatch):
    monkeypatch.setitem(REGISTRY, "reward", dict(REGISTRY["reward"]))

    class Twin(RewardTerm):
        """Another class under an existing name."""

        name = "correctness"

    with pytest.raises(ValueError, match="duplicate reward term name 'correctness'"):
        register(Twin)
    with pytest.raises(ConfigError) as err:
        build_terms("reward", {"no_such_term": {}})
    assert err.value.args[0].endswith(", ".join(sorted(REGISTRY["reward"])))


# ----------------------------------------------------------------------------------------------- edge cases

EDGE_CASES = {
    # name: (lengths, correct, G, think_close)
    "all-same-length": ([4, 4, 4, 4], [1, 0, 1, 0], 2, [True] * 4),
    "all-correct": ([2, 5, 3, 8], [1, 1, 1, 1], 4, [True] * 4),
    "all-wrong": ([2, 5, 3, 8], [0, 0, 0, 0], 2, [True] * 4),
    "G=1": ([2, 5, 3], [1, 0, 1], 1, [True] * 3),
    "no-think-close": ([3, 6], [1, 0], 2, [False, False]),
    "zero-length": ([0, 0, 4, 0], [1, 0, 0, 1], 2, [False, False, True, False]),
}


def edge_rollouts(lengths, correct, G, think_close):
    lengths = torch.tensor(lengths)
    B, T = len(lengths), max(1, int(lengths.max()))
    pos = torch.arange(T).unsqueeze(0)
    mask = pos < lengths.unsqueeze(1)
    close = torch.tensor(think_close)
    think = mask & close.unsqueeze(1) & (pos < (lengths // 2).unsqueeze(1))
    g = torch.Generator().manual_seed(0)
    return Rollouts(
        completions=["<think>a</think>b" if c else "aaa" for c in think_close],
        completion_ids=[[7] * int(n) for n in lengths],
        lengths=lengths,
        prompt_lengths=torch.full((B,), 5),
        truncated=lengths >= T,
        correct=torch.tensor(correct, dtype=torch.float32),
        group_size=G,
        prompt_keys=[i // G for i in range(B)],
        max_completion_length=8,
        step=3,
        mask=mask,
        entropies=torch.rand(B, T, generator=g) * 3,
        think_mask=think,
        answer_mask=mask & close.unsqueeze(1) & ~think,
        has_think_close=close,
        answers=["1"] * B,
        cost=torch.rand(B, generator=g).double() * 1e-5,
        tool_calls=torch.randint(0, 4, (B,), generator=g).float(),
    )


COMBINERS = ("par", "gated", "ensemble")  # read earlier terms, so they go last


def all_terms(kind):
    """Every term of a kind with its conf defaults, task rewards first and combiners last (the trainer's order)."""
    order = sorted(REGISTRY[kind], key=lambda n: (n not in ("correctness", "format"), n in COMBINERS))
    cfg = {}
    for name in order:
        cfg.update(OmegaConf.to_container(OmegaConf.load(CONF / kind / f"{name}.yaml")))
    return build_terms(kind, cfg)


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_every_term_is_finite_on_edge_cases(case):
    r = edge_rollouts(*EDGE_CASES[case])
    B = len(r.completions)
    total = torch.zeros(B)
    for _ in range(2):  # twice: stateful terms (HAPO, Router window) also run with history
        r.term_rewards = {}
        for term in all_terms("reward"):
            raw = term(r)
            assert raw.shape == (B,) and torch.isfinite(raw).all(), term.name
            r.term_rewards[term.name] = raw
            total = total + term.weight * raw
    rewards = total
    adv = rewards.view(-1, r.group_size) - rewards.view(-1, r.group_size).mean(dim=1, keepdim=True)
    adv = adv.reshape(-1)
    for term in all_terms("advantage"):
        out = term(adv, r, rewards)
        assert out.shape[0] == B and torch.isfinite(out).all(), term.name

    T = r.mask.shape[1]
    A = adv.unsqueeze(1).expand(B, T).clone()
    logps = -torch.rand(B, T, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    H = torch.rand(B, T, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    logits = torch.randn(B, T, 7, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    # every optional loss-batch field (loss_batch.OPTIONAL_FIELDS), so a term that reads one is exercised too
    optional = {"logits": logits, "ref_logps": logps.detach() - 0.05,
                "group_accuracy": torch.rand(B, generator=torch.Generator().manual_seed(4))}
    for mask in (r.mask, torch.zeros_like(r.mask)):  # and an empty mask
        for term in all_terms("regularizer"):
            A2 = term.token_advantages(LossBatch.of(logps.detach(), logps.detach() - 0.1, A, mask, **optional))
            assert A2.shape == (B, T) and torch.isfinite(A2).all(), term.name
            loss = term.loss(LossBatch.of(logps, logps.detach() - 0.1, A2, mask, H, **optional))
            assert loss is None or torch.isfinite(loss).all(), term.name
            for k, v in term.metrics().items():
                assert isinstance(v, float), (term.name, k)


def test_package_registers_everything_on_import():
    assert shaping.REGISTRY is REGISTRY
    assert {"length_kimi", "pear", "cost_router", "par"} <= set(REGISTRY["reward"])
    assert {"positive_length", "bnpo", "empg"} <= set(REGISTRY["advantage"])
    assert {"clip_cov", "kl_cov", "siren", "forking_tokens"} <= set(REGISTRY["regularizer"])
