"""The `hf` task: question/answer rows from a Hugging Face dataset, scored with math-verify like `file`.

`task.dataset` may be
* a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (read with `load_from_disk`),
* a local .jsonl / .json / .parquet / .csv file (read with the matching packaged builder),
* anything else `datasets.load_dataset` accepts: a Hub id (needs network or the local cache) or a data directory.

Both splits are shuffled with `task.seed` and cut to `task.train_size` / `task.eval_size` (0 keeps all rows);
training rows whose question is in the eval split are dropped. A saved single `Dataset` (no named splits) is
split like a `file` task: the last `task.eval_size` shuffled rows are the eval split.
GSM8K-style answers ("... #### 72") are reduced to what follows '####'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import ConfigError, TaskConfig
from workbench.tasks.files import QATask, check_columns, shuffled

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


class HFTask(QATask):
    """Rows of `task.dataset` (config `task.dataset_config`, splits `task.train_split` / `task.eval_split`)."""

    name = "hf"

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        if not cfg.dataset:
            raise ConfigError("task.dataset must be set when task.name=hf (a Hub id or a local dataset path)")
        self.source = cfg.dataset
        splits = self._load()
        for rows in splits.values():
            check_columns(rows.column_names, cfg, self.source)
        if len(splits) == 1 and None in splits:
            rows = shuffled(splits[None].to_list(), cfg.seed)
            if cfg.eval_size >= len(rows):
                raise ConfigError(
                    f"task.eval_size={cfg.eval_size} leaves no training rows in {self.source} ({len(rows)} rows)"
                )
            cut = len(rows) - cfg.eval_size
            self._set_splits(rows[:cut], rows[cut:], self.source)
            return
        train = shuffled(splits["train"].to_list(), cfg.seed)
        evals = shuffled(splits["eval"].to_list(), cfg.seed)
        if cfg.eval_size:
            evals = evals[: cfg.eval_size]
        self._set_splits(train, evals, self.source)

    def _load(self) -> dict[Any, Any]:
        """{"train": Dataset, "eval": Dataset}, or {None: Dataset} for a saved dataset without splits."""
        import datasets

        cfg = self.cfg
        local = Path(cfg.dataset).expanduser()
        try:
            if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
                loaded = datasets.load_from_disk(str(local))
                if isinstance(loaded, datasets.Dataset):
                    return {None: loaded}
                return {part: self._pick(loaded, split, key) for part, split, key in self._wanted()}
            if local.is_file():
                builder = _BUILDERS.get(local.suffix.lower())
                if builder is None:
                    raise ConfigError(
                        f"task.dataset={cfg.dataset!r}: unsupported file type; use one of {', '.join(_BUILDERS)}"
                    )
                loaded = datasets.load_dataset(builder, data_files=str(local), split="train")
                return {None: loaded}
            if cfg.dataset.startswith(("/", "./", "../", "~")) and not local.exists():
                raise ConfigError(f"task.dataset={cfg.dataset!r}: no such local path")
            loaded = datasets.load_dataset(cfg.dataset, cfg.dataset_config)  # all splits (they are prepared anyway)
            return {part: self._pick(loaded, split, key) for part, split, key in self._wanted()}
        except ConfigError:
            raise
        except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError...)
            raise ConfigError(f"task.dataset={cfg.dataset!r}: could not load ({_one_line(e)})") from None

    def _wanted(self) -> list[tuple[str, str, str]]:
        return [("train", self.cfg.train_split, "train_split"), ("eval", self.cfg.eval_split, "eval_split")]

    def _pick(self, loaded: Any, split: str, key: str) -> Any:
        if split not in loaded:
            raise ConfigError(f"task.{key}={split!r} not in splits of {self.source}: {', '.join(loaded)}")
        return loaded[split]
