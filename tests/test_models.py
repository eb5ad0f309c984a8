"""The model factory: tiny tokenizer, tiny model, warm start, cache, hf loading and LoRA.

Uses a fake single-digit a+b task (same trace format as the arithmetic task) and a 30-step warm start, so
the file runs in well under a minute on 2 CPU cores without depending on the real tasks.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from workbench.config import ConfigError, LoraConfig, ModelConfig, TinyModelConfig
from workbench.models import default_cache_dir, load_model_and_tokenizer
from workbench.models import tiny as tiny_mod
from workbench.models.hf import is_path_like
from workbench.tasks.base import Task, split_think


class OneDigitAdd(Task):
    """a+b with single digits; prompt `3+4=`, completion `<think>3+4=7</think>7` or a step-by-step trace."""

    name = "fake-add"

    def __init__(self, traces: bool = True, verbose_style: str = "steps") -> None:
        pairs = [(a, b) for a in range(10) for b in range(10)]
        random.Random(0).shuffle(pairs)
        self._splits = {"train": pairs[:80], "eval": pairs[80:]}
        self.traces = traces
        self.verbose_style = verbose_style

    def examples(self, split: str) -> list[dict[str, Any]]:
        return [
            {"prompt": f"{a}+{b}=", "answer": str(a + b), "id": f"{split}-{i}", "a": a, "b": b}
            for i, (a, b) in enumerate(self._splits[split])
        ]

    def extract_answer(self, completion: str) -> str | None:
        _, answer, closed = split_think(completion)
        return answer.strip() if closed and answer.strip() else None

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return float(self.extract_answer(completion) == example["answer"])

    def warm_start_completion(self, example: dict[str, Any], rng: random.Random, verbose: bool) -> str | None:
        if not self.traces:
            return None
        a, b = example["a"], example["b"]
        if not verbose:
            return f"<think>{a}+{b}={a + b}</think>{a + b}"
        if self.verbose_style == "steps":
            return f"<think>{a}+{b}. {a}+{b}={a + b}. check: {a + b}-{b}={a} ok</think>{a + b}"
        return f"<think>{a} plus {b} is {a + b}</think>{a + b}"


# 30 steps of batch 16: ~3 s; enough for the loss to fall well below its initial ~ln(vocab).
FAST = dict(warm_start_steps=30, warm_start_batch_size=16, warm_start_lr=3e-3)


def tiny_cfg(**overrides: Any) -> ModelConfig:
    return ModelConfig(kind="tiny", tiny=TinyModelConfig(**{**FAST, **overrides}))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rl-cache")


@pytest.fixture(scope="module")
def built(cache: Path) -> tuple[Any, Any, dict[str, Any]]:
    """One warm-started tiny model shared by the tests that only read it."""
    return load_model_and_tokenizer(tiny_cfg(), OneDigitAdd(), cache_dir=cache, progress=False)


# ----------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_and_think_tokens() -> None:
    tok = tiny_mod.build_tokenizer("é")
    text = "  3 + 4 = ?\n<think>3+4. 3+4=7. check: 7-4=3 ok</think>7  é\t"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids
    # the tags are single tokens, and nothing (no BOS/EOS) is added around the text
    assert tok("<think>7</think>")["input_ids"] == [
        tok.convert_tokens_to_ids("<think>"),
        tok.convert_tokens_to_ids("7"),
        tok.convert_tokens_to_ids("</think>"),
    ]
    # TRL decodes completions with skip_special_tokens=True: think tags stay, pad/eos go
    completion = tok("<think>3+4=7</think>7")["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(completion, skip_special_tokens=True) == "<think>3+4=7</think>7"
    assert tok.pad_token == "<pad>" and tok.eos_token == "<eos>"
    assert tok.pad_token_id != tok.eos_token_id


def test_tokenizer_save_load_and_padding(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = tiny_mod.build_tokenizer("", padding_side="left")
    assert isinstance(tok, PreTrainedTokenizerFast)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "12 + 3 =<think> a b </think> 15"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert loaded.padding_side == "left" and loaded.pad_token_id == tok.pad_token_id
    batch = loaded(["1+1=", "10+10="], padding=True)["input_ids"]
    assert batch[0][:2] == [loaded.pad_token_id] * 2  # left padding
    right = AutoTokenizer.from_pretrained(tmp_path, padding_side="right")
    assert right(["1+1=", "10+10="], padding=True)["input_ids"][0][-1] == right.pad_token_id
    # chat template: raw concatenation, so use_chat_template=true yields the warm-start prompt
    msgs = [{"role": "user", "content": "3+4="}]
    assert loaded.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == "3+4="


# ----------------------------------------------------------------------------------------------- model


def test_default_model_shape() -> None:
    tok = tiny_mod.build_tokenizer("")
    model = tiny_mod.build_model(TinyModelConfig(), tok)
    n = sum(p.numel() for p in model.parameters())
    assert 0.9e6 < n < 1.1e6, n
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.config.vocab_size == len(tok)
    for cfg in (model.config, model.generation_config):
        assert (cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id) == (
            tok.eos_token_id, tok.pad_token_id, tok.bos_token_id)


def test_bad_tiny_shape_is_config_error() -> None:
    with pytest.raises(ConfigError, match="model.tiny.num_heads"):
        tiny_mod.check_tiny_config(TinyModelConfig(num_heads=3))


def test_length_buckets_split_bimodal_batches() -> None:
    assert tiny_mod.length_buckets([10, 10, 10, 10]) == [[0, 1, 2, 3]]
    groups = tiny_mod.length_buckets([60, 20, 62, 21])
    assert [sorted(g) for g in groups] == [[1, 3], [0, 2]]


def test_bucketed_loss_equals_single_batch_loss() -> None:
    tok = tiny_mod.build_tokenizer("")
    torch.manual_seed(0)
    model = tiny_mod.build_model(TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64), tok)
    prompts = [tok(p)["input_ids"] for p in ["1+2=", "3+4=", "5+6="]]
    comps = [tok(c)["input_ids"] for c in ["<think>3</think>3", "<think>long trace 7</think>7", "<think>11</think>11"]]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    whole = tiny_mod.warm_start_loss(model, [tiny_mod.make_batch(prompts, comps, eos, pad)], backward=False)
    parts = [tiny_mod.make_batch([prompts[i] for i in g], [comps[i] for i in g], eos, pad) for g in ([0, 2], [1])]
    assert tiny_mod.warm_start_loss(model, parts, backward=False) == pytest.approx(whole, rel=1e-5)


# ----------------------------------------------------------------------------------------------- warm start + cache


def test_warm_start_learns_and_records(built: tuple[Any, Any, dict[str, Any]]) -> None:
    model, tok, info = built
    assert info["kind"] == "tiny" and info["cache_hit"] is False
    assert info["warm_start_loss_final"] < 0.8 * info["warm_start_loss_initial"]
    assert 0.0 <= info["warm_start_accuracy"] <= 1.0
    assert info["warm_start_eval_examples"] == 20
    meta = json.loads((Path(info["cache_path"]) / tiny_mod.META_FILE).read_text())
    assert meta["warm_start_accuracy"] == info["warm_start_accuracy"]
    assert len(meta["losses"]) == FAST["warm_start_steps"]
    expected_keys = {"kind", "name_or_path", "num_params", "num_trainable_params", "dtype", "lora", "vocab_size",
                     "load_seconds", "cache_path", "cache_hit", "warm_start_seconds", "warm_start_accuracy",
                     "warm_start_loss_initial", "warm_start_loss_final", "warm_start_eval_examples"}
    assert expected_keys <= set(info)
    assert not model.training


def test_cache_hit_is_fast_and_identical(built: tuple[Any, Any, dict[str, Any]], cache: Path) -> None:
    model, tok, info = built
    start = time.perf_counter()
    model2, tok2, info2 = load_model_and_tokenizer(tiny_cfg(), OneDigitAdd(), cache_dir=cache, progress=False)
    assert time.perf_counter() - start < 5.0
    assert info2["cache_hit"] is True and info2["cache_path"] == info["cache_path"]
    assert info2["warm_start_accuracy"] == info["warm_start_accuracy"]
    for (name, p), (_, q) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(p, q), name
    assert tok2.get_vocab() == tok.get_vocab()


def test_cache_misses_when_config_or_task_changes(built: tuple[Any, Any, dict[str, Any]]) -> None:
    _, _, info = built
    def digest(cfg: TinyModelConfig, t: Task) -> str:
        return tiny_mod.cache_hash(tiny_mod.cache_key(cfg, t, tiny_mod.collect_task_material(t, cfg)))

    same = digest(TinyModelConfig(**FAST), OneDigitAdd())
    assert same == Path(info["cache_path"]).name
    assert digest(TinyModelConfig(**{**FAST, "warm_start_steps": 31}), OneDigitAdd()) != same
    assert digest(TinyModelConfig(**{**FAST, "hidden_size": 64}), OneDigitAdd()) != same
    assert digest(TinyModelConfig(**FAST), OneDigitAdd(verbose_style="words")) != same  # other warm-start traces
    renamed = OneDigitAdd()
    renamed.name = "other-task"
    assert digest(TinyModelConfig(**FAST), renamed) != same


def test_cache_miss_builds_a_second_entry(built: tuple[Any, Any, dict[str, Any]], cache: Path) -> None:
    cfg = tiny_cfg(warm_start_steps=2, hidden_size=32, intermediate_size=64, num_layers=1)
    _, _, info = load_model_and_tokenizer(cfg, OneDigitAdd(), cache_dir=cache, progress=False)
    assert info["cache_hit"] is False and info["cache_path"] != built[2]["cache_path"]


def test_killed_build_leaves_no_half_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg(warm_start_steps=2, hidden_size=32, intermediate_size=64, num_layers=1)
    real_save = tiny_mod.PreTrainedTokenizerFast.save_pretrained

    def save_then_die(self: Any, *args: Any, **kwargs: Any) -> Any:
        real_save(self, *args, **kwargs)  # the model weights are already written at this point
        raise KeyboardInterrupt("killed mid-build")

    monkeypatch.setattr(tiny_mod.PreTrainedTokenizerFast, "save_pretrained", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        load_model_and_tokenizer(cfg, OneDigitAdd(), cache_dir=tmp_path, progress=False)
    entries = [p for p in (tmp_path / "tiny").iterdir() if not p.name.endswith(".lock")]
    assert entries == []  # neither a final entry nor a leftover temp dir

    monkeypatch.undo()
    _, _, info = load_model_and_tokenizer(cfg, OneDigitAdd(), cache_dir=tmp_path, progress=False)
    assert info["cache_hit"] is False and (Path(info["cache_path"]) / tiny_mod.META_FILE).is_file()


def test_task_without_traces_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task 'fake-add' does not \\(use model=hf\\)"):
        load_model_and_tokenizer(tiny_cfg(), OneDigitAdd(traces=False), cache_dir=tmp_path, progress=False)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RL_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("RL_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "rl-workbench"


# ----------------------------------------------------------------------------------------------- hf + lora


def test_hf_kind_loads_a_saved_tiny_model(built: tuple[Any, Any, dict[str, Any]], tmp_path: Path) -> None:
    model, tok, _ = built
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    hf_model, hf_tok, info = load_model_and_tokenizer(
        ModelConfig(kind="hf", name_or_path=str(tmp_path / "m")), OneDigitAdd(), progress=False
    )
    assert info["kind"] == "hf" and info["cache_hit"] is None and info["warm_start_accuracy"] is None
    assert hf_tok.pad_token_id == tok.pad_token_id and hf_tok.padding_side == "left"
    enc = tok(["3+4=", "12+5="], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = model(**enc).logits
        b = hf_model(**hf_tok(["3+4=", "12+5="], return_tensors="pt", padding=True)).logits
    assert torch.equal(a, b)


def test_hf_missing_directory_is_one_line_config_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError) as err:
        load_model_and_tokenizer(ModelConfig(kind="hf", name_or_path=missing), OneDigitAdd(), progress=False)
    assert str(err.value) == f"model.name_or_path: directory not found: {missing}"


def test_hf_uncached_hub_name_is_one_line_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty HF cache
    with pytest.raises(ConfigError) as err:
        load_model_and_tokenizer(ModelConfig(kind="hf", name_or_path="no-such-org/no-such-model"), OneDigitAdd(),
                                 progress=False)
    msg = str(err.value)
    assert msg.startswith("model.name_or_path='no-such-org/no-such-model'") and "\n" not in msg


def test_path_like_names() -> None:
    assert is_path_like("./final") and is_path_like("/abs/dir") and is_path_like("~/m") and is_path_like("a/b/c")
    assert not is_path_like("Qwen/Qwen2.5-0.5B-Instruct") and not is_path_like("gpt2")


# peft calls a transformers method that transformers 5 deprecated; not ours to fix.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_wraps_the_model(built: tuple[Any, Any, dict[str, Any]], cache: Path) -> None:
    cfg = tiny_cfg()
    cfg.lora = LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0)
    model, _, info = load_model_and_tokenizer(cfg, OneDigitAdd(), cache_dir=cache, progress=False)
    assert info["cache_hit"] is True and info["lora"] is True
    assert 0 < info["num_trainable_params"] < info["num_params"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_bad_target_modules_is_config_error(built: tuple[Any, Any, dict[str, Any]], cache: Path) -> None:
    cfg = tiny_cfg()
    cfg.lora = LoraConfig(enabled=True, target_modules=["no_such_proj"])
    with pytest.raises(ConfigError, match="model.lora.target_modules"):
        load_model_and_tokenizer(cfg, OneDigitAdd(), cache_dir=cache, progress=False)


def test_dtype_is_applied(built: tuple[Any, Any, dict[str, Any]], cache: Path) -> None:
    cfg = tiny_cfg()
    cfg.dtype = "bfloat16"
    model, _, info = load_model_and_tokenizer(cfg, OneDigitAdd(), cache_dir=cache, progress=False)
    assert info["cache_hit"] is True and next(model.parameters()).dtype == torch.bfloat16


def test_importing_the_workbench_turns_hugging_face_telemetry_off():
    """TRL's trainer sends telemetry from a thread (a DNS lookup that segfaulted in a sweep worker); the workbench
    turns it off before huggingface_hub reads the variable, and keeps a value the user set."""
    import subprocess
    import sys

    code = ("import workbench, huggingface_hub.constants as c, os; "
            "print(os.environ['HF_HUB_DISABLE_TELEMETRY'], c.HF_HUB_DISABLE_TELEMETRY)")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "True"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "HF_HUB_DISABLE_TELEMETRY": "0"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "False"]
