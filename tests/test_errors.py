"""Every error agent-dispatcher raises is under ``DispatcherError``: no module raises a builtin exception type.

The check reads the source (``ast``) of every module of ``dispatcher/`` and ``workers/``. It fails on a ``raise`` of
a builtin exception class (``ValueError``, ``RuntimeError``, ``Exception``, ...), with or without ``from``: a new
builtin error is new either way. A bare ``raise`` and a re-raise of a caught exception (``raise error from None``)
name no builtin class and pass. What it allows, and why, is listed below; nothing else.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dispatcher", "workers")
BUILTIN_ERRORS = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
)
VALIDATORS = frozenset({"field_validator", "model_validator"})
"""Decorators of pydantic validator functions: pydantic turns their ``ValueError`` into a ``ValidationError``,
which the callers convert (``Settings.build`` to ``ConfigError``, the producer to ``InvalidTask``)."""

ALLOWED_RAISES: dict[tuple[str, str, str], str] = {
    ("dispatcher/task.py", "check_capability", "ValueError"): (
        "Task's capability validator calls it, so it must raise what pydantic expects; every other caller "
        "converts the ValueError (test_every_check_capability_caller_converts)"
    ),
    ("dispatcher/task.py", "check_limit", "ValueError"): (
        "Task's rate_limits validator calls it, so it must raise what pydantic expects; ratelimits.define and "
        "ProducerCore.limit_keys convert the ValueError"
    ),
    ("dispatcher/cli/main.py", "_interrupt", "KeyboardInterrupt"): "SIGTERM unwinds the command like Ctrl-C",
    ("workers/demo.py", "_interrupt", "KeyboardInterrupt"): "SIGTERM unwinds the demo like Ctrl-C",
    ("workers/demo_app.py", "flaky", "RuntimeError"): (
        "a demo handler that fails its first attempt on purpose: a handler's exception is its task's failure"
    ),
    ("workers/builtins.py", "_seconds", "ValueError"): (
        "raised in the built-in `sleep` handler: a handler's exception is its task's failure, recorded in the "
        "result and the dead letter like any user handler's, never raised to a caller of ours"
    ),
    ("dispatcher/store/connection.py", "send_packed_command", "ConnectionError"): (
        "redis-py's ConnectionError, raised inside its connection for uvloop's RuntimeError on a closed transport, "
        "so redis-py retries it; the gateway's wrap_error makes it RedisUnavailable"
    ),
    ("dispatcher/store/topology.py", "__getattr__", "AttributeError"): (
        "the lazy cluster client's __getattr__: Python's protocol for a missing attribute"
    ),
    ("dispatcher/store/topology.py", "__getattr__", "ConnectionError"): (
        "redis-py's ConnectionError, for a cluster no node of which answers when the lazy client is first used: "
        "redis-py retries it and the gateway's wrap_error makes it RedisUnavailable, as for one server"
    ),
}
"""(module, enclosing function, builtin exception) -> why it may be raised there."""

ALLOWED_CLASSES: dict[tuple[str, str], str] = {
    ("dispatcher/errors.py", "DispatcherError"): "the base of the tree",
    ("dispatcher/errors.py", "Retry"): "a handler's request for another attempt, not an error of ours",
    ("dispatcher/errors.py", "RateLimited"): "a handler's report of a provider's quota refusal, not an error of ours",
    ("dispatcher/errors.py", "Reject"): "a handler's refusal of its task, not an error of ours",
    ("dispatcher/store/connection.py", "PoolTimeout"): (
        "raised inside redis-py's connection pool, so it is a redis-py ConnectionError as the one it replaces; it "
        "never leaves the gateway as is: wrap_error makes it PoolExhausted"
    ),
    ("workers/slots.py", "SlotError"): (
        "a broken invariant of the slot table: a bug in the worker, not an error a user can act on, so it must not "
        "be caught by an `except DispatcherError`"
    ),
}
"""(module, class) -> why this exception class does not derive from DispatcherError."""


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _name(node: ast.expr | None) -> str:
    """The class name a ``raise`` or a base names: ``ValueError(...)``, ``ValueError``, ``builtins.ValueError``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _decorators(func: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    return {_name(d) for d in func.decorator_list}


class _Walk(ast.NodeVisitor):
    """Every raise of a builtin exception and every call of ``check_capability``, with their context."""

    def __init__(self) -> None:
        self.functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
        self.converting: list[bool] = []  # for each enclosing try: does it turn a ValueError into ours?
        self.raises: list[tuple[str, str, int]] = []  # (function, exception, line)
        self.unconverted_calls: list[int] = []
        self.classes: list[tuple[str, int]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def _in_validator(self) -> bool:
        return any(_decorators(f) & VALIDATORS for f in self.functions)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        bases = {_name(b) for b in node.bases}
        if bases and bases <= BUILTIN_ERRORS:  # derives from builtin exceptions only: outside our tree
            self.classes.append((node.name, node.lineno))
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        converting = any(_catches_value_error(h) and _raises_ours(h) for h in node.handlers)
        self.converting.append(converting)
        for child in node.body:
            self.visit(child)
        self.converting.pop()
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(child)

    def visit_Raise(self, node: ast.Raise) -> None:
        name = _name(node.exc)
        if name in BUILTIN_ERRORS and not self._in_validator():
            function = self.functions[-1].name if self.functions else "<module>"
            self.raises.append((function, name, node.lineno))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if _name(node.func) == "check_capability" and not (self._in_validator() or any(self.converting)):
            self.unconverted_calls.append(node.lineno)
        self.generic_visit(node)


def _catches_value_error(handler: ast.ExceptHandler) -> bool:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(_name(t) in ("ValueError", "Exception", "BaseException") for t in types if t is not None)


def _raises_ours(handler: ast.ExceptHandler) -> bool:
    raises = [n for n in ast.walk(handler) if isinstance(n, ast.Raise)]
    return bool(raises) and all(n.exc is not None and _name(n.exc) not in BUILTIN_ERRORS for n in raises)


def walk(source: str) -> _Walk:
    found = _Walk()
    found.visit(ast.parse(source))
    return found


def walked() -> Iterator[tuple[str, _Walk]]:
    for path in modules():
        yield path.relative_to(ROOT).as_posix(), walk(path.read_text(encoding="utf-8"))


def test_no_module_raises_a_builtin_exception() -> None:
    problems = [
        f"{module}:{line}: raise {exc} in {function}()"
        for module, found in walked()
        for function, exc, line in found.raises
        if (module, function, exc) not in ALLOWED_RAISES
    ]
    assert problems == [], "raise an error of dispatcher.errors instead (or allow it here, saying why)"


def test_every_allowed_raise_still_exists() -> None:
    seen = {(module, function, exc) for module, found in walked() for function, exc, _ in found.raises}
    assert set(ALLOWED_RAISES) <= seen, "drop allow-list entries whose raise is gone"


def test_every_exception_class_is_in_the_tree() -> None:
    found = {(module, name) for module, w in walked() for name, _ in w.classes}
    assert found - set(ALLOWED_CLASSES) == set(), "derive it from DispatcherError (or allow it here, saying why)"
    assert set(ALLOWED_CLASSES) <= found, "drop allow-list entries whose class is gone"


def test_every_check_capability_caller_converts() -> None:
    """``check_capability`` raises ValueError for pydantic; a caller outside a validator must convert it."""
    calls = {module: found.unconverted_calls for module, found in walked() if found.unconverted_calls}
    assert calls == {}


@pytest.mark.parametrize(
    ("source", "raises", "unconverted"),
    [
        ("def f():\n    raise ValueError('x')\n", [("f", "ValueError", 2)], []),
        ("def f(e):\n    raise RuntimeError('x') from e\n", [("f", "RuntimeError", 2)], []),
        ("def f():\n    raise Exception\n", [("f", "Exception", 2)], []),
        ("def f(e):\n    raise e from None\n", [], []),
        ("def f():\n    try:\n        g()\n    except KeyError:\n        raise\n", [], []),
        ("@field_validator('x')\ndef f(v):\n    raise ValueError(v)\n", [], []),
        ("def f(n):\n    return check_capability(n)\n", [], [2]),
        ("def f(n):\n    try:\n        check_capability(n)\n    except ValueError:\n        pass\n", [], [3]),
        (
            "def f(n):\n    try:\n        check_capability(n)\n    except ValueError as e:\n"
            "        raise ConfigError(str(e)) from None\n",
            [],
            [],
        ),
    ],
)
def test_the_check_itself(source: str, raises: list[tuple[str, str, int]], unconverted: list[int]) -> None:
    found = walk(source)
    assert (found.raises, found.unconverted_calls) == (raises, unconverted)


def test_the_class_check_itself() -> None:
    found = walk("class A(Exception): ...\nclass B(A): ...\nclass C(DispatcherError, LookupError): ...\n")
    assert found.classes == [("A", 1)]
