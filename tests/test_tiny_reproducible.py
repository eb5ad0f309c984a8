"""The tiny model builds the same weights whatever the caller's thread count, OMP_NUM_THREADS or the load: the build
runs on `progress.build_threads()` torch threads (1 by default), and a build on another count has its own cache key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench.config import ConfigError, TaskConfig, TinyModelConfig
from workbench.models.tiny_cache import cache_key, collect_task_material, ensure_cached
from workbench.progress import BUILD_THREADS, BUILD_THREADS_ENV, build_threads
from workbench.tasks import build_task

# A small build (~2 s on one core): 12 steps of batch 16 on 2-digit a+-b.
SMALL = TinyModelConfig(hidden_size=64, num_layers=2, intermediate_size=128, warm_start_steps=12,
                        warm_start_batch_size=16)


def _task():
    return build_task(TaskConfig(train_size=200, eval_size=10))


def _build(root: Path, caller_threads: int, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, torch.Tensor], set]:
    """Build SMALL into `root` with the caller on `caller_threads` threads (and OMP_NUM_THREADS saying so); returns
    the saved weights and the thread counts torch had during the warm start's forward passes."""
    from transformers import Qwen2ForCausalLM

    monkeypatch.setenv("OMP_NUM_THREADS", str(caller_threads))
    seen: set[int] = set()
    forward = Qwen2ForCausalLM.forward

    def spy(self, *args, **kwargs):
        seen.add(torch.get_num_threads())
        return forward(self, *args, **kwargs)

    saved = torch.get_num_threads()
    monkeypatch.setattr(Qwen2ForCausalLM, "forward", spy)
    torch.set_num_threads(caller_threads)
    try:
        path, hit = ensure_cached(root, SMALL, _task(), progress=False)
        assert torch.get_num_threads() == caller_threads  # the caller's count is put back
    finally:
        torch.set_num_threads(saved)
    assert not hit
    return load_file(str(path / "model.safetensors")), seen


def test_build_is_bit_identical_whatever_the_callers_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one, seen_one = _build(tmp_path / "a", 1, monkeypatch)
    two, seen_two = _build(tmp_path / "b", 2, monkeypatch)
    assert seen_one == seen_two == {BUILD_THREADS}  # the warm start and its greedy accuracy ran on the fixed count
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_thread_override_has_its_own_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    task = _task()
    material = collect_task_material(task, SMALL)
    monkeypatch.delenv(BUILD_THREADS_ENV, raising=False)
    default = cache_key(SMALL, task, material)
    assert "build_threads" not in default  # the default key is the one existing caches were built under
    monkeypatch.setenv(BUILD_THREADS_ENV, "2")
    assert build_threads() == 2
    assert cache_key(SMALL, task, material) == {**default, "build_threads": 2}
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(BUILD_THREADS_ENV, bad)
        with pytest.raises(ConfigError, match=BUILD_THREADS_ENV):
            build_threads()


def test_build_environment_enters_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model built under another torch/transformers version or CPU ISA gets its own entry (and the key says so)."""
    import workbench.models.tiny_cache as tiny_cache

    task = _task()
    material = collect_task_material(task, SMALL)
    key = cache_key(SMALL, task, material)
    assert key["build_env"] == {"torch": torch.__version__, "transformers": tiny_cache._transformers_version(),
                                "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    monkeypatch.setattr(tiny_cache, "_transformers_version", lambda: "0.0-other")
    other = cache_key(SMALL, task, material)
    assert other["build_env"]["transformers"] == "0.0-other"
    assert tiny_cache.cache_hash(other) != tiny_cache.cache_hash(key)
