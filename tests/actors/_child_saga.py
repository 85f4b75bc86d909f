"""A child process for the failover test: runs the `Mirror` process manager under a
short lease, prints "ready <held partitions>" and waits to be killed."""

from __future__ import annotations

import sys

import anyio

from actors import ProcessManagerOptions, open_system
from tests.actors.test_process import Mirror


async def main(path: str, ttl: float) -> None:
    async with open_system(path) as system:
        handle = await system.run_process_manager(
            Mirror(), options=ProcessManagerOptions(lease_ttl=ttl)
        )
        sys.stdout.write(f"ready {','.join(map(str, handle.held))}\n")
        sys.stdout.flush()
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], float(sys.argv[2]))
