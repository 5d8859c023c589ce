"""The sandbox task templates render in. Task configs are shared like data: a template may read values
and lay them out, never run code, mutate anything, exhaust memory or run for ever.

- Jinja's immutable sandbox: no attribute tricks, no mutation;
- globals: only `range` (bounded by the sandbox) and `dict`; no lipsum, cycler, joiner or namespace;
- sizes: every filter and method call refuses an integer argument over MAX_WIDTH (`center(10**9)`), a
  format string with a width over it (or a `*` width), and `replace`/`join`/`expandtabs`/`+`/`~`/`*`/`%`
  whose result would be over MAX_LENGTH; numbers stop at MAX_BITS; `string`/`tojson`/`pprint`/`sum`
  and `{{ }}` refuse values that would print longer than MAX_LENGTH (a list of a million references to
  one long text is small in memory until printed); the rendered text stops past MAX_LENGTH;
- time: a render runs at most RENDER_SECONDS (a line tracer, so loops with empty bodies stop too).
"""

from __future__ import annotations

import functools
import re
import string
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_WIDTH = 100_000  # an integer argument to a filter or method (a width, a count, a length)
MAX_LENGTH = 10**6  # characters of any text a template builds, and of what it renders
MAX_BITS = 10**5  # of a number built with **
RENDER_SECONDS = 2.0
_TRACE_CHECK_EVERY = 1000  # line events between two looks at the clock
_TEMPLATE_FILE = "<template>"  # what Jinja names the code of a template made from a string
_FORMAT_WIDTH = re.compile(r"\d{6,}")  # a width or precision of 100,000 or more in a format string
_STAR_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d*\.\*)")  # `%*s`: the width comes from the operands
_PRINTING_FILTERS = ("string", "tojson", "pprint", "list", "unique", "sort")  # sized by what they print or copy


class TemplateTimeout(SecurityError):
    pass


def _too_long(length: int) -> None:
    if length > MAX_LENGTH:
        raise SecurityError(f"text of {length:,} characters is too long (limit {MAX_LENGTH:,})")


def _check_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
            raise SecurityError(f"{name}: argument {value} is too large (limit {MAX_WIDTH:,})")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _FORMAT_WIDTH.search(text):
        raise SecurityError(f"format string {text[:40]!r} asks for a width over {MAX_WIDTH:,}")


def _check_str_format(text: str) -> None:
    """A `str.format` template: no width over the limit, and none taken from the arguments (`{:>{w}}`
    with w="4000000000" is a width no literal shows)."""
    _check_format(text)
    try:
        specs = [spec for _, _, spec, _ in string.Formatter().parse(text) if spec]
    except ValueError:
        return  # str.format itself refuses it
    if any("{" in spec for spec in specs):
        raise SecurityError(f"format string {text[:40]!r}: a width or precision taken from the arguments")


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else len(str(value))


def _weight(value: Any) -> int:
    """Roughly how many characters `value` prints as, counted only until past MAX_LENGTH (without
    recursion, and without printing it: a list holding one long text a million times is cheap to hold)."""
    total, pending = 0, [value]
    while pending and total <= MAX_LENGTH:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            pending.extend(item)
        else:
            total += 8
    return total


def _check_printed(name: str, value: Any) -> None:
    if _weight(value) > MAX_LENGTH:
        raise SecurityError(f"{name}: the value would print longer than {MAX_LENGTH:,} characters")


def _check_result_size(name: str, args: tuple[Any, ...]) -> None:
    """Filters and methods whose result can be far larger than their inputs."""
    if name == "replace" and len(args) >= 3 and all(isinstance(a, str) for a in args[:3]):
        text, old, new = args[:3]
        _too_long(len(text) + (text.count(old) if old else len(text) + 1) * len(new))
    elif name == "join" and len(args) >= 2:
        # the filter takes (items, separator), str.join (separator, items)
        items, separator = (args[1], args[0]) if name == "join" and isinstance(args[0], str) and \
            not isinstance(args[1], str) else (args[0], args[1])
        if isinstance(items, str | list | tuple | range) and isinstance(separator, str):
            _too_long(len(separator) * len(items))
            _too_long(len(items) if isinstance(items, str) else sum(map(_sized, items)))
    elif name == "expandtabs" and args and isinstance(args[0], str):
        tabsize = args[1] if len(args) > 1 and isinstance(args[1], int) else 8
        _too_long(len(args[0]) + args[0].count("\t") * max(tabsize, 0))
    elif name in _PRINTING_FILTERS and args:
        _check_printed(name, args[0])


def _bounded(value: Any) -> Any:
    """An iterator (`map`, `select` output) as a list, refused once its items hold too much text: a
    lazy `range(100000)|map('center', 100000)` would otherwise become gigabytes inside `join` or `list`."""
    if not isinstance(value, Iterator):
        return value
    items, total = [], 0
    for item in value:
        total += _sized(item)
        _too_long(total)
        items.append(item)
    return items


def _guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    passes_first = getattr(function, "jinja_pass_arg", None) is not None  # env/context/eval ctx first

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        args = tuple(map(_bounded, args))
        own = args[1:] if passes_first else args
        _check_arguments(name, own, kwargs)
        if name == "format" and own:
            _check_format(own[0])
        _check_result_size(name, own)
        start = kwargs.get("start", own[2] if len(own) > 2 else 0)
        if name == "sum" and own and not isinstance(start, int | float):  # a list `start` concatenates
            _check_printed(name, own[0])
        return function(*args, **kwargs)

    return guarded


def _printable(value: Any) -> Any:
    """What `{{ }}` prints, refused before str() builds it when it would be too long."""
    if not isinstance(value, str):
        _check_printed("output", value)
    return value


class _GuardedCodeGenerator(CodeGenerator):
    """`a ~ b` compiles to a plain join that no sandbox hook sees; send it through one that checks."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Any) -> None:
        self.write("environment.concat_checked((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class TemplateSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"**", "*", "+", "%"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, **options: Any):
        options.setdefault("finalize", _printable)
        super().__init__(**options)
        self.globals = {"range": self.globals["range"], "dict": dict}
        self.filters = {name: _guarded_filter(name, function) for name, function in self.filters.items()}

    @staticmethod
    def concat_checked(parts: tuple[Any, ...]) -> str:
        texts = [str(part) for part in parts]
        _too_long(sum(map(len, texts)))
        return "".join(texts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        numbers = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and numbers and right > 0 and abs(left).bit_length() * right > MAX_BITS:
            raise SecurityError(f"power {left}**{right} is too large")
        if operator == "*" and numbers and abs(left).bit_length() + abs(right).bit_length() > MAX_BITS:
            raise SecurityError(f"a product of {MAX_BITS:,} bits or more is too large")  # squaring 2**50000 again
        if operator == "*":
            sized = [side for side in (left, right) if isinstance(side, str | bytes | bytearray | list | tuple)]
            count = [side for side in (left, right) if isinstance(side, int)]
            if sized and count and len(sized[0]) * count[0] > MAX_LENGTH:
                raise SecurityError("repeated text is too long")
            if sized and count and count[0] > 0 and not isinstance(sized[0], str | bytes | bytearray) and \
                    _weight(sized[0]) * count[0] > MAX_LENGTH:  # [long text] * 10**6: the items count
                raise SecurityError("repeated items would print too long")
        if operator == "+" and isinstance(left, str | bytes | bytearray | list | tuple) and \
                isinstance(right, str | bytes | bytearray | list | tuple):
            _too_long(len(left) + len(right))
        if operator == "%" and isinstance(left, str):
            _check_format(left)
            if _STAR_WIDTH.search(left.replace("%%", "")):  # `%%` is a literal percent sign
                raise SecurityError(f"format string {left[:40]!r}: a width taken from the operands (*)")
            _too_long(len(left) + _weight(right))
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - as Jinja's
        if isinstance(__obj, jinja2.Undefined):  # `lipsum(10**6)` once lipsum is gone: say it is undefined
            return __obj(*args, **kwargs)
        name = getattr(__obj, "__name__", type(__obj).__name__)
        args = tuple(map(_bounded, args))
        _check_arguments(name, args, kwargs)
        receiver = getattr(__obj, "__self__", None)
        if isinstance(receiver, str | list | tuple):
            _check_result_size(name, (receiver, *args))
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_str_format(value.__self__)
        return wrapped


class _Deadline:
    """A line tracer for this thread that raises once the render has run too long; the previous tracer
    (a debugger, coverage) is put back afterwards."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends = 0.0
        self.events = 0

    def __enter__(self) -> None:
        self.ends = time.monotonic() + self.seconds
        self.previous = sys.gettrace()
        sys.settrace(self._global)

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self.previous)

    def _global(self, frame: Any, event: str, arg: Any) -> Any:
        # Every call counts (a filter's loop calls functions); lines only in the template's own code,
        # which is where a loop can spin without calling anything. Cheaper than tracing every line.
        self._tick()
        return self._local if frame.f_code.co_filename == _TEMPLATE_FILE else None

    def _local(self, frame: Any, event: str, arg: Any) -> Any:
        self._tick()
        return self._local

    def _tick(self) -> None:
        self.events += 1
        if self.events % _TRACE_CHECK_EVERY == 0 and time.monotonic() > self.ends:
            raise TemplateTimeout(f"rendering ran longer than {self.seconds:g}s")


def render(template: jinja2.Template, **values: Any) -> str:
    """The template rendered with `values`, within the size and time limits (SecurityError past them)."""
    chunks: list[str] = []
    length = 0
    with _Deadline(RENDER_SECONDS):
        stream: Iterator[str] = template.generate(**values)
        for chunk in stream:
            length += len(chunk)
            _too_long(length)
            chunks.append(chunk)
    return "".join(chunks)
