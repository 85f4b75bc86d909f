"""Carrying an event through a process manager: sending the commands `react` calls
for (retrying transient failures with backoff), recording a refused step and sending
its compensation, and parking what cannot be carried through in the dead letters.
"""

from __future__ import annotations

import anyio
import msgspec

from actors._dispatch import (
    Dispatch,
    UnreadableRecord,
    record_refusal,
    recorded_refusal,
)
from actors._errors import (
    AskTimeout,
    MailboxFull,
    Overloaded,
    Rejected,
    ShuttingDown,
    TooManyAttempts,
)
from actors._process_partition import _LeaseLost
from actors._process_state import _ProcessState
from actors._process_types import ParkedStep
from actors._telemetry import dead_letter
from store import (
    Lease,
    LeaseLost,
    RecordedEvent,
    StoreError,
    StoreUnavailable,
    faults,
    telemetry,
)

__all__: list[str] = []


_TRANSIENT = (MailboxFull, Overloaded, AskTimeout, TooManyAttempts, StoreUnavailable)


class _Carrying(_ProcessState):
    """Carrying events through (see the module docs)."""

    async def _carry_through(
        self, recorded: RecordedEvent, fence: Lease | None, replay: bool
    ) -> None:
        """Send the commands `recorded` calls for, compensating refused ones.

        With `replay` (the event may have been handled before, past the checkpoint), a
        step with a `StepRefused` record was refused then: it is not sent again (it
        could now be accepted and contradict its compensation); its recorded
        compensation is sent again instead, finishing one a crash cut short.
        """
        manager = self.manager
        try:
            steps = tuple(manager.react(recorded))
        except Exception as exc:  # noqa: BLE001 - a bug in react: park the event, go on
            self._park(recorded, None, exc, 1)
            return
        prefix = f"{manager.name}:{recorded.position}"
        store = self._system.store
        for index, step in enumerate(steps):
            command_id = f"{prefix}:{index}"
            if replay:
                try:
                    undo = await recorded_refusal(store, command_id)
                except (StoreError, UnreadableRecord) as exc:
                    self._park(recorded, command_id, exc, 1)
                    continue
                if undo is not None:
                    self._rejected += 1
                    await self._undo(recorded, undo, command_id, fence)
                    continue
            try:
                await self._send(recorded, step, command_id, fence)
            except Rejected as refusal:
                self._rejected += 1
                await self._compensate(recorded, step, refusal, command_id, fence)

    async def _compensate(
        self,
        recorded: RecordedEvent,
        step: Dispatch,
        refusal: Rejected,
        command_id: str,
        fence: Lease | None,
    ) -> None:
        """Record the refusal of `step` with the commands that undo it, then send them."""
        try:
            undo = tuple(self.manager.compensate(recorded, step, refusal))
        except Exception as exc:  # noqa: BLE001 - a bug in compensate: park, go on
            self._park(recorded, command_id, exc, 1)
            return
        try:
            undo = await record_refusal(self._system.store, command_id, refusal, undo, fence)
        except LeaseLost as exc:
            raise _LeaseLost from exc
        except (StoreError, UnreadableRecord, msgspec.EncodeError) as exc:
            self._park(recorded, command_id, exc, 1)
            return
        await self._undo(recorded, undo, command_id, fence)

    async def _undo(
        self,
        recorded: RecordedEvent,
        undo: tuple[Dispatch, ...],
        command_id: str,
        fence: Lease | None,
    ) -> None:
        for index, step_back in enumerate(undo):
            undo_id = f"{command_id}:c{index}"
            try:
                await self._send(recorded, step_back, undo_id, fence)
            except Rejected as exc:
                self._park(recorded, undo_id, exc, 1)
            else:
                self._compensations += 1

    async def _send(
        self, recorded: RecordedEvent, step: Dispatch, command_id: str, fence: Lease | None
    ) -> None:
        router = self._system.aggregates(step.aggregate)
        delay = self.options.retry_delay
        attempts = self.options.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                await router.ask(
                    step.aggregate_id,
                    step.command,
                    command_id=command_id,
                    timeout=self.options.ask_timeout,
                    fence=fence,
                )
            except (Rejected, ShuttingDown):
                raise
            except LeaseLost as exc:
                raise _LeaseLost from exc
            except _TRANSIENT as exc:
                if attempt == attempts:
                    self._park(recorded, command_id, exc, attempt)
                    return
                self._retries += 1
                await anyio.sleep(delay)  # backoff before the same command id again
                delay = min(delay * 2, 1.0)
            except Exception as exc:  # noqa: BLE001 - the step failed for good: park, go on
                self._park(recorded, command_id, exc, attempt)
                return
            else:
                self._sent += 1
                if faults.enabled:
                    await faults.hit_async("process_after_send")
                return

    def _park(
        self, recorded: RecordedEvent, command_id: str | None, error: BaseException, attempts: int
    ) -> None:
        self._parked_total += 1
        if telemetry.meter is not None:
            dead_letter(self.name)
        if len(self._parked) >= self.options.max_parked:
            self._parked.pop(0)
        self._parked.append(
            ParkedStep(
                recorded.position,
                recorded.stream_id,
                recorded.version,
                recorded.event_type,
                command_id,
                f"{type(error).__name__}: {error}",
                attempts,
            )
        )
        self._log.warning(
            "process.parked",
            position=recorded.position,
            stream_id=recorded.stream_id,
            command_id=command_id,
            error=type(error).__name__,
        )
