"""The shaping-term interface and its registry.

Three kinds of term (DESIGN.md), one registry keyed by (kind, name):

* ``reward``: per-rollout scalar before group normalisation. ``term(rollouts) -> Tensor (B,)``.
* ``advantage``: rewrites advantages after group normalisation.
  ``term(advantages (B,), rollouts, rewards (B,)) -> Tensor (B,) or (B, T)``.
* ``regularizer``: acts on the loss. A regularizer may (a) set TRL options (``trl_args``), (b) rewrite per-token
  advantages once the training forward pass has produced log-probs (``token_advantages(batch)``), (c) add a loss
  term (``loss(batch)``). Each hook is optional; both take one ``LossBatch`` (``workbench.shaping.loss_batch``),
  whose optional fields (the logits, ...) a term lists in ``fields``.

``workbench.shaping.pipeline.ShapingPipeline`` runs the terms (weights, the one weighted sum, NaN checks, metric
names); ``workbench.trainers`` adapts it to TRL.

Terms declare the signals they need in ``needs``; the trainer computes a signal only when an active term needs it.
Signals (``workbench.signals.SIGNALS``): ``correct``, ``lengths``, ``entropy`` (per-token entropies of the sampled
completions at reward time), ``cost``, and the derived ones in ``workbench.signals.DERIVED_SIGNALS``: ``phase``
(think/answer token masks), ``tool_calls``, ``answers``. ``correct`` and ``lengths`` are
always present because every run logs them.

Rollouts are always the whole (gathered) generation batch: rollouts ``g*G .. (g+1)*G - 1`` share a prompt, so a
term that needs the whole group always sees it, also in a multi-process run.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from workbench.config import ConfigError
from workbench.rollouts import Rollouts
from workbench.shaping.loss_batch import OPTIONAL_FIELDS, LossBatch
from workbench.signals import SIGNALS  # the signal table lives with the signal definitions (workbench.signals)

KINDS = ("reward", "advantage", "regularizer")


class Term:
    """Base of all shaping terms. Subclasses set ``name``, ``kind`` and ``needs`` and take options as kwargs."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    #: the term acts per agent turn and means nothing without tool calls: `check_train` refuses it when the task
    #: has no `task.tools`
    requires_tools: ClassVar[bool] = False

    def state_dict(self) -> dict[str, Any]:
        """Cross-step state to save with checkpoints (e.g. HAPO's per-prompt history). Empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        """Extra metrics for the last call, logged as ``shaping/<name>/<key>``."""
        return {}

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Called once at setup with the run's tokenizer. Default: nothing.

        For terms whose options are strings that must become token ids (EMPG's step delimiters).
        """


class RewardTerm(Term):
    kind = "reward"

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:  # (B,)
        raise NotImplementedError


class AdvantageTransform(Term):
    kind = "advantage"

    def __call__(self, advantages: torch.Tensor, rollouts: Rollouts, rewards: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Regularizer(Term):
    """Loss-side term. Override any of the three hooks; the defaults do nothing.

    Both per-micro-batch hooks take one `LossBatch` (`workbench.shaping.loss_batch`): log-probs, old log-probs,
    advantages, mask, entropies, ids, the group layout, and the optional fields the term lists in `fields`
    (e.g. ``fields = frozenset({"logits"})``), which the trainer fills only when some active term lists them.
    """

    kind = "regularizer"
    fields: frozenset[str] = frozenset()  # optional LossBatch fields this term reads (loss_batch.OPTIONAL_FIELDS)

    def trl_args(self) -> dict[str, Any]:
        """Options for TRL's GRPOConfig that implement this term natively (e.g. ``entropy_coef``)."""
        return {}

    def token_advantages(self, batch: LossBatch) -> torch.Tensor:
        """The (B, T) advantages TRL's loss will use, rewritten from ``batch.advantages`` (detached inputs)."""
        return batch.advantages

    def loss(self, batch: LossBatch) -> torch.Tensor | None:
        """An extra scalar loss (already normalised, e.g. a token mean), or None."""
        return None

    @property
    def has_token_hook(self) -> bool:
        return type(self).token_advantages is not Regularizer.token_advantages

    @property
    def has_loss(self) -> bool:
        return type(self).loss is not Regularizer.loss


# ----------------------------------------------------------------------------------------------- registry

REGISTRY: dict[str, dict[str, type[Term]]] = {kind: {} for kind in KINDS}
#: Names no term may take, and why.
RESERVED_NAMES = {"total": "TRL logs the shaped reward it receives as `rewards/total/mean` (workbench.trainers)"}


def register(cls: type[Term]) -> type[Term]:
    """Class decorator: add a term to the registry under (cls.kind, cls.name). Duplicates raise."""
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__}.kind={cls.kind!r}; must be one of {KINDS}")
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    unknown = set(cls.needs) - SIGNALS
    if unknown:
        raise ValueError(f"{cls.__name__}.needs has unknown signals {sorted(unknown)}; valid: {sorted(SIGNALS)}")
    unknown_fields = set(getattr(cls, "fields", ())) - set(OPTIONAL_FIELDS)
    if unknown_fields:
        raise ValueError(f"{cls.__name__}.fields has unknown loss-batch fields {sorted(unknown_fields)}; "
                         f"valid: {sorted(OPTIONAL_FIELDS)}")
    if cls.name in RESERVED_NAMES:
        raise ValueError(f"{cls.__name__}.name={cls.name!r} is reserved: {RESERVED_NAMES[cls.name]}")
    table = REGISTRY[cls.kind]
    if cls.name in table and table[cls.name] is not cls:
        raise ValueError(f"duplicate {cls.kind} term name {cls.name!r}: {table[cls.name].__name__} and {cls.__name__}")
    table[cls.name] = cls
    return cls


def build_terms(kind: str, options_by_name: dict[str, dict[str, Any]]) -> list[Term]:
    """Instantiate the terms of one kind from config ``{name: {option: value}}``, in config order.

    Unknown names and unknown options raise ConfigError naming the key and the valid choices.
    """
    import workbench.shaping  # noqa: F401  (registers every term)

    table = REGISTRY[kind]
    terms = []
    for name, options in options_by_name.items():
        if name not in table:
            raise ConfigError(f"{kind}={name!r} is not a known {kind} term; choose from: {', '.join(sorted(table))}")
        cls = table[name]
        options = dict(options or {})
        params = inspect.signature(cls.__init__).parameters
        valid = [p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
        for key in options:
            if key not in valid:
                raise ConfigError(f"unknown key '{kind}.{name}.{key}'; valid keys: {', '.join(sorted(valid))}")
        options = _check_options(cls, options, f"{kind}.{name}")
        try:
            terms.append(cls(**options))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{kind}.{name}: {e}") from None
    return terms


def _check_options(cls: type[Term], options: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Types from the constructor's annotations (a number where a float is declared, ...) and finiteness of every
    number, nested ones included: `reward.format.weight=nan` must fail here, not train with the term dropped."""
    import math
    import typing

    from workbench.config import coerce

    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is simply not checked
        hints = {}
    out = {}
    for key, value in options.items():
        full = f"{prefix}.{key}"
        if key in hints:
            value = coerce(value, hints[key], full)

        def finite(v: Any, where: str) -> None:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where}={v}: expected a finite number")
            if isinstance(v, dict):
                for k, x in v.items():
                    finite(x, f"{where}.{k}")
            elif isinstance(v, (list, tuple)):
                for i, x in enumerate(v):
                    finite(x, f"{where}[{i}]")

        finite(value, full)
        out[key] = value
    return out
