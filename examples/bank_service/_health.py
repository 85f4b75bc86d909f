"""The operational routes of the bank service: `GET /health` (the statistics of the
system, its store, read models and process manager; 503 while stopping) and
`GET /metrics` (the process's metrics in Prometheus text format).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from examples.bank_service._api import HealthReply
from examples.bank_service._replies import json_response
from examples.bank_service._service import Service
from examples.bank_service._telemetry import METRICS_CONTENT_TYPE, metrics_text

__all__ = ["HealthRoutes"]


class HealthRoutes:
    """The handlers of `/health` and `/metrics` over one `Service`."""

    def __init__(self, service: Service) -> None:
        self._service = service

    async def health(self, request: Request) -> Response:
        running = self._service.running
        system = running.system
        head = system.bus.head
        process = running.process.statistics()
        reply = HealthReply(
            status="ok" if system.accepting else "stopping",
            system=system.statistics(),
            store=system.store.statistics(),
            bus_head=head,
            projections=(running.balances.statistics(), running.statements.statistics()),
            process_managers=(process,),
            process_lag={process.name: max(head - process.position, 0)},
        )
        return json_response(reply, 200 if system.accepting else 503)

    async def metrics(self, request: Request) -> Response:
        # (what the process's meter provider reports: see `configure_telemetry`)
        return Response(metrics_text(), media_type=METRICS_CONTENT_TYPE)
