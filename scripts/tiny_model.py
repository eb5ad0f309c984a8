"""Build (or find in the cache) the tiny model an experiment trains, before a sweep's parallel jobs need it.

    .venv/bin/python scripts/tiny_model.py experiment=replication [more overrides]

Prints what it did to stderr (cache folder, cache hit, the warm start's greedy held-out accuracy) and the cache
folder alone to stdout, for scripts that pass it on (`model=hf model.name_or_path=<it>`). One cold build takes
minutes (on 1 torch thread: `workbench.progress.BUILD_THREADS`); a cache hit takes seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(overrides: list[str]) -> None:
    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.models import load_model_and_tokenizer
    from workbench.tasks import build_task

    cfg = to_train_config(compose("train", overrides))
    info = load_model_and_tokenizer(cfg.model, build_task(cfg.task))[2]
    print("tiny model:", info["cache_path"], "cache hit:", info["cache_hit"],
          "warm-start greedy held-out accuracy:", info.get("warm_start_accuracy"), file=sys.stderr)
    print(info["cache_path"])


if __name__ == "__main__":
    main(sys.argv[1:])
