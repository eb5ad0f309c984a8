"""The Optuna storage of a sweep (hydra.sweeper.storage: {_target_: workbench.sweep.optuna_storage.study_storage}).

In memory (optuna 2.10's SQL storage does not run on SQLAlchemy 2), written to optuna_study.json on every change,
and seeded on --resume with the earlier trials (replayed) and the failed trials' parameters (enqueued, so Optuna's
ask() runs them first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.sweep.directory import STUDY_FILE, read_definition, write_study


def _trial_to_json(t) -> dict[str, Any]:
    from optuna.distributions import distribution_to_json

    return {
        "number": t.number,
        "job": t.number,
        "state": t.state.name,
        "params": t.params,
        "distributions": {k: json.loads(distribution_to_json(d)) for k, d in t.distributions.items()},
        "values": t.values,
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
    }


def _trial_from_json(d: dict[str, Any], state: str | None = None, values: Any = None):
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState

    state = state or d["state"]
    return _create_trial(
        state=TrialState[state],
        values=(values if values is not None else d.get("values")) if state == "COMPLETE" else None,
        params=d.get("params") or {},
        distributions={k: json_to_distribution(json.dumps(v)) for k, v in (d.get("distributions") or {}).items()},
    )


def _create_trial(**kwargs):
    """optuna.trial.create_trial without its 'experimental' warning (stable in every 2.x and 3.x release)."""
    import warnings

    from optuna.trial import create_trial

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_trial(**kwargs)


def best_trials(trials: list[dict[str, Any]], directions: list[str]) -> dict[str, Any]:
    """The best trial (one objective) or the Pareto front (several), as optuna_study.json records them."""
    done = [t for t in trials if t["state"] == "COMPLETE" and t.get("values")]
    if not done:
        return {"best_params": None, "best_value": None, "best_job": None}
    if len(directions) == 1:
        sign = 1 if directions[0] == "maximize" else -1
        best = max(done, key=lambda t: sign * t["values"][0])
        return {"best_params": best["params"], "best_value": best["values"][0], "best_job": best["number"]}
    from workbench.stats import non_dominated

    front = non_dominated([t["values"] for t in done], [d == "maximize" for d in directions])
    return {"best_trials": [{"job": done[i]["number"], "params": done[i]["params"], "values": done[i]["values"]}
                            for i in front]}


def study_storage(sweep_dir: str, launch: int):
    """A fresh storage for launch `launch` of the sweep in `sweep_dir` (Hydra instantiates it per launch)."""
    import optuna
    from optuna.trial import TrialState

    sweep = Path(sweep_dir)
    entry = read_definition(sweep)["launches"][launch]

    class SweepStudyStorage(optuna.storages.InMemoryStorage):
        def __init__(self) -> None:
            super().__init__()
            self._loading = False
            self._study_id: int | None = None

        def create_new_study(self, study_name=None):
            sid = super().create_new_study(study_name)
            self._study_id = sid
            self._loading = True
            try:
                for t in entry.get("replay", []):
                    self.create_new_trial(sid, template_trial=_trial_from_json(t, t["replay_state"],
                                                                                t.get("replay_values")))
                for params in entry.get("retry", []):
                    self.create_new_trial(sid, template_trial=_create_trial(
                        state=TrialState.WAITING, system_attrs={"fixed_params": params}))
            finally:
                self._loading = False
            return sid

        def _dump(self) -> None:
            if self._loading or self._study_id is None:
                return
            try:
                self._write()
            except Exception as e:  # noqa: BLE001 - the file is a record; losing one write must not stop the study
                print(f"warning: could not write {STUDY_FILE}: {e}")

        def _write(self) -> None:
            trials = [_trial_to_json(t) for t in self.get_all_trials(self._study_id, deepcopy=False)
                      if t.state != TrialState.WAITING]
            directions = [d.name.lower() for d in self.get_study_directions(self._study_id)]
            write_study(sweep, {"study_name": self.get_study_name_from_id(self._study_id), "directions": directions,
                                "trials": trials, **best_trials(trials, directions)})

        def set_trial_param(self, *args, **kwargs):
            out = super().set_trial_param(*args, **kwargs)
            self._dump()
            return out

        def set_trial_state(self, *args, **kwargs):
            out = super().set_trial_state(*args, **kwargs)
            self._dump()
            return out

        def set_trial_values(self, *args, **kwargs):
            out = super().set_trial_values(*args, **kwargs)
            self._dump()
            return out

    return SweepStudyStorage()
