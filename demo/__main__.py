"""`python -m demo`: a placeholder until the simulation lands; opens a store and shows it."""

from __future__ import annotations

import sys

import anyio

from store import open_store


async def _show(path: str) -> None:
    async with open_store(path) as store:
        stats = store.statistics()
        position = await store.last_position()
        print(f"esactors demo store {path!r}: {position} events, last position {position}")
        print(f"writer: {stats.appends} appends in {stats.batches} batches this run")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    anyio.run(_show, args[0] if args else "demo.db")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
