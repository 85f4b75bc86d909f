"""Which event loop the load test runs on: uvloop when it is installed, else asyncio's.

uvloop (the `uvloop` extra) runs the same load with less CPU per command on this
project's benchmarks (docs/performance.md, "The event loop"), so `--loop auto`, the
default, takes it when it can be imported; `--loop asyncio` and `--loop uvloop` choose.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import anyio

__all__ = ["INSTALL", "Loop", "LoopUnavailable", "loop_name", "resolve", "run", "uvloop_installed"]

Loop = Literal["auto", "asyncio", "uvloop"]
INSTALL = "pip install 'esactors[uvloop]'"
T = TypeVar("T")


class LoopUnavailable(Exception):
    """`--loop uvloop` was asked for and uvloop is not installed."""


def uvloop_installed() -> bool:
    """Whether uvloop can be imported (not on Windows, nor without the extra)."""
    return importlib.util.find_spec("uvloop") is not None


def resolve(loop: Loop) -> Literal["asyncio", "uvloop"]:
    """The loop `loop` stands for here: `auto` is uvloop when installed.

    Raises:
        LoopUnavailable: `uvloop` asked for and not installed.
    """
    if loop == "asyncio":
        return "asyncio"
    if uvloop_installed():
        return "uvloop"
    if loop == "uvloop":
        raise LoopUnavailable(f"--loop uvloop: uvloop is not installed ({INSTALL})")
    return "asyncio"


def run(fn: Callable[[], Awaitable[T]], loop: Literal["asyncio", "uvloop"]) -> T:
    """Run `fn` to completion on a new event loop of the kind `loop` names."""
    options: dict[str, Any] = {"use_uvloop": True} if loop == "uvloop" else {}
    return anyio.run(fn, backend="asyncio", backend_options=options)


def loop_name() -> str:
    """ "uvloop" or "asyncio": the running event loop's kind."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.partition(".")[0] == "uvloop" else "asyncio"
