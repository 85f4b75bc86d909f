"""The bank service: the demo bank behind an HTTP API, as a Starlette application.

`create_app(path)` returns the ASGI app; its lifespan owns the actor system. Run it with
`python -m examples.bank_service --port 8000` (or `make example`); `--workers N` serves
it from N processes on one store, each building its app with `worker_app()` (the
factory uvicorn imports: `uvicorn --factory examples.bank_service:worker_app`).
Endpoints:

- `POST /accounts/{id}/open` `{"owner": str}`, `POST /accounts/{id}/deposit` and
  `POST /accounts/{id}/withdraw` `{"amount": int}`, `POST /transfers`
  `{"source", "target", "amount", "transfer_id"?}`: the reply carries the committed
  `version` and `position`. `Idempotency-Key` makes a retry safe.
- `GET /accounts/{id}` (balance; `?at=<ISO-8601>` or `?version=N` for the past),
  `GET /accounts/{id}/statement`, `GET /transfers/{id}`: pass a position as
  `X-Consistent-With` (or `?after=`) to read your own write.
- `GET /health`: the system's statistics.
- `GET /metrics`: the process's metrics in Prometheus text format (esactors' among
  them); traces go to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and
  log lines carry the request's `trace_id` and `span_id` then.

Every reply names the process that answered in `X-Worker-Pid`.

Every error, an unknown route (404) or method (405) included, answers the JSON
`ErrorReply`: `{"error", "detail", "field"?, "type"?}`.
"""

from __future__ import annotations

from examples.bank_service._app import DATABASE_ENV, bank_of, create_app
from examples.bank_service._plumbing import WORKER_HEADER
from examples.bank_service._serve import GRACE_ENV, worker_app
from examples.bank_service._service import Bank, ServiceSettings

__all__ = [
    "DATABASE_ENV",
    "GRACE_ENV",
    "WORKER_HEADER",
    "Bank",
    "ServiceSettings",
    "bank_of",
    "create_app",
    "worker_app",
]
