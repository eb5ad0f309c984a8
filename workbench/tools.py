"""Tools an agent can call during a rollout: offline, deterministic, priced, and logged call by call.

TRL 1.16's GRPOTrainer runs multi-turn tool use itself (``environment_factory``): it renders the tools into the
prompt, parses tool calls out of each completion with the tokenizer's ``response_template``, calls the tool,
appends the result as a ``tool`` message and lets the model go on; result tokens get ``tool_mask = 0`` (no loss, no
advantage). The workbench hands it an environment class built here, and ``rl eval`` runs the same environments
in its own loop (``workbench.evaluation``), so a tool call costs and counts the same in training and evaluation.

Tools (the method names are the tool names the model writes):

* ``calculator(expression)``: exact integer/decimal arithmetic (+ - * / // % ** and parentheses) through Python's
  ``ast``, never ``eval``; exponents and result sizes are bounded so no expression can hang a worker.
* ``expert(question)``: a stand-in for a paid call to a stronger model: it returns the reference answer of the
  problem being solved (whatever the question's wording), at a fixed price per call. It works for every task.

Every call is recorded on the environment (``calls``: name, arguments, result, ok, $ price, seconds), priced from
``price.tools`` ($ per call; a failed call is charged too, as an API would). A tool that raises, gets bad
arguments or runs past ``task.tool_timeout`` seconds returns ``error: ...`` to the model and the rollout goes on.
The timeout runs the tool on a worker thread and stops waiting; a Python thread cannot be killed, which is why the
built-in tools bound their own work.
"""

from __future__ import annotations

import ast
import concurrent.futures
import operator
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal, DivisionByZero, InvalidOperation, localcontext
from typing import Any, Callable

#: Tools a run may enable (`task.tools`), in the order they are offered to the model.
TOOL_NAMES = ("calculator", "expert")
#: Default price per call in $ (`price.tools`): the calculator stands in for a cheap API, the expert for a call to a
#: large model (about 2k tokens at $1/1M in + out).
DEFAULT_TOOL_PRICES = {"calculator": 0.0001, "expert": 0.002}
# Bounds that keep the calculator's work small whatever the model writes.
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_DIGITS = 60


@dataclass
class ToolCall:
    """One call as it happened: what the model asked, what it got back, what it cost."""

    name: str
    arguments: dict[str, Any]
    result: str
    ok: bool
    price: float  # $ charged for the call
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- calculator

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}


def _check_size(x: Decimal) -> Decimal:
    if x.is_finite() and x != 0 and x.adjusted() >= MAX_DIGITS:
        raise ValueError(f"result has more than {MAX_DIGITS} digits")
    return x


def _eval(node: ast.AST) -> Decimal:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return _check_size(Decimal(str(node.value)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or right != right.to_integral_value()):
            raise ValueError(f"exponents must be whole numbers up to {MAX_EXPONENT}")
        return _check_size(_BINARY[type(node.op)](left, right))
    raise ValueError("only numbers, + - * / // % ** and parentheses are allowed")


def calculate(expression: str) -> str:
    """The calculator's answer as text: exact for integers, up to 12 significant digits after a division.

    >>> calculate("347*86"), calculate("(2+3)**2 - 7/2"), calculate("10/4")
    ('29842', '21.5', '2.5')
    """
    text = str(expression).strip().replace("x", "*").replace("\u00d7", "*").rstrip("=").strip()
    if not text:
        raise ValueError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"cannot parse {text!r}") from e
    with localcontext() as ctx:
        ctx.prec = MAX_DIGITS + 10
        try:
            value = _eval(tree)
        except (DivisionByZero, InvalidOperation, ZeroDivisionError) as e:
            raise ValueError("division by zero") from e
        if value == value.to_integral_value():
            return str(int(value))
        return f"{float(value):.12g}"


# ----------------------------------------------------------------------------------------------- environment


class ToolEnvironment:
    """The per-rollout environment TRL's ``environment_factory`` builds: tool methods + the call log.

    TRL exposes every public method of the class except ``reset`` / ``get_reward`` as a tool, so this base class
    has none: ``environment_class`` adds the enabled ones. Helpers are private (``_run``).
    """

    def __init__(self, prices: dict[str, float] | None = None, timeout: float = 5.0):
        self._prices = {**DEFAULT_TOOL_PRICES, **(prices or {})}
        self._timeout = float(timeout)
        self._example: dict[str, Any] = {}
        self.calls: list[ToolCall] = []

    def reset(self, **example: Any) -> None:
        """Start a rollout on `example` (the dataset row): forget earlier calls. Adds nothing to the prompt."""
        self._example = dict(example)
        self.calls = []
        return None

    # -- bookkeeping ------------------------------------------------------------------------------------

    def _run(self, name: str, arguments: dict[str, Any], fn: Callable[[], str]) -> str:
        start = time.perf_counter()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            result, ok = str(pool.submit(fn).result(timeout=self._timeout)), True
        except concurrent.futures.TimeoutError:
            result, ok = f"error: {name} timed out after {self._timeout:g} s", False
        except Exception as e:  # a tool failure is an answer to the model, not a crash of the run
            result, ok = f"error: {e}" if str(e) else f"error: {type(e).__name__}", False
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self.calls.append(ToolCall(name, dict(arguments), result, ok, float(self._prices.get(name, 0.0)),
                                   round(time.perf_counter() - start, 6)))
        return result

    @property
    def dollars(self) -> float:
        """$ spent on tool calls in this rollout."""
        return float(sum(c.price for c in self.calls))


def _calculator(self, expression: str) -> str:
    """Evaluate an arithmetic expression exactly.

    Args:
        expression: The expression, with numbers, + - * / and parentheses, e.g. 347*86.
    """
    return self._run("calculator", {"expression": expression}, lambda: calculate(expression))


def _expert(self, question: str) -> str:
    """Ask an expert model, which answers the current problem correctly but costs more than other tools.

    Args:
        question: The question to ask.
    """
    def answer() -> str:
        if "answer" not in self._example:
            raise ValueError("the expert has no problem to answer (reset was not called with an example)")
        return str(self._example["answer"])

    return self._run("expert", {"question": question}, answer)


_calculator.__name__, _expert.__name__ = "calculator", "expert"
TOOL_METHODS: dict[str, Callable[..., str]] = {"calculator": _calculator, "expert": _expert}


def check_tools(names: list[str] | tuple[str, ...], prices: dict[str, float] | None = None) -> None:
    """Raise ValueError (one line, naming the key and the choices) on an unknown tool or a negative price."""
    for name in names:
        if name not in TOOL_METHODS:
            raise ValueError(f"task.tools: unknown tool {name!r}; choose from: {', '.join(TOOL_NAMES)}")
    for name, price in (prices or {}).items():
        if name not in TOOL_METHODS:
            raise ValueError(f"price.tools.{name}: unknown tool; choose from: {', '.join(TOOL_NAMES)}")
        if float(price) < 0:
            raise ValueError(f"price.tools.{name}={price} must be >= 0 ($ per call)")


def environment_class(names: list[str] | tuple[str, ...]) -> type[ToolEnvironment]:
    """A ToolEnvironment subclass whose public methods are exactly the tools in `names`."""
    check_tools(names)
    return type("ToolEnvironment_" + "_".join(names), (ToolEnvironment,), {n: TOOL_METHODS[n] for n in names})


def environment_factory(names: list[str] | tuple[str, ...], prices: dict[str, float] | None = None,
                        timeout: float = 5.0) -> Callable[[], ToolEnvironment]:
    """What TRL's ``environment_factory`` takes: a no-argument callable returning a fresh environment."""
    cls = environment_class(names)

    def make() -> ToolEnvironment:
        return cls(prices=prices, timeout=timeout)

    return make


def tool_functions(env: ToolEnvironment) -> list[Callable[..., str]]:
    """The environment's tools as bound methods (what TRL renders into the prompt and what `rl eval` calls)."""
    return [getattr(env, n) for n in TOOL_NAMES if hasattr(type(env), n)]


@dataclass
class ToolUsage:
    """A rollout's tool use, summarised: what the `tool_calls` / `turns` / `cost` signals read."""

    calls: int = 0
    failures: int = 0
    dollars: float = 0.0
    by_tool: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, calls: list[ToolCall] | list[dict[str, Any]]) -> "ToolUsage":
        usage = cls()
        for c in calls:
            c = c.to_dict() if isinstance(c, ToolCall) else c
            usage.calls += 1
            usage.failures += 0 if c["ok"] else 1
            usage.dollars += float(c["price"])
            usage.by_tool[c["name"]] = usage.by_tool.get(c["name"], 0) + 1
        return usage


def check_tool_template(tokenizer: Any, label: str) -> None:
    """With task.tools, the chat template must render tool calls and TRL must be able to parse them back; say so
    in one line before a run directory exists (TRL would fail later, inside the trainer's constructor)."""
    from trl.chat_template_utils import add_response_schema, supports_tool_calling

    from workbench.config import ConfigError

    if not supports_tool_calling(tokenizer):
        raise ConfigError(f"task.tools: the chat template of model {label!r} cannot render tool calls and results; "
                          "use a tool-calling chat model (e.g. model=qwen2.5-0.5b-instruct) or model=tiny")
    if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
        try:
            add_response_schema(tokenizer)
        except ValueError:
            raise ConfigError(f"task.tools: TRL cannot parse tool calls from model {label!r} (no response template "
                              "for its chat template); use a Qwen2.5/Qwen3/Llama-3.1 instruct model or model=tiny"
                              ) from None
