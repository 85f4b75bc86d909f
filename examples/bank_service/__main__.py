"""Run the bank service under uvicorn: `python -m examples.bank_service --port 8000`.

Logs are JSON lines on stderr, with each request's correlation and command ids. SIGTERM
or Ctrl-C shuts down gracefully: uvicorn stops accepting connections and finishes the
requests in flight, then the app's lifespan drains the actor system and closes the store.
`--database` (or `BANK_SERVICE_DB`) is a SQLite file or a `postgresql://` URL.

`--workers N` (N > 1) serves from N uvicorn worker processes on that one store: each
imports `examples.bank_service:worker_app` and opens an actor system of its own (see
`examples/bank_service/_serve.py`); uvicorn's parent process hands out the socket and
forwards SIGTERM and Ctrl-C to every worker.
"""

from __future__ import annotations

import argparse
import os
import re
import socket

import uvicorn

from examples.bank_service._app import DATABASE_ENV, create_app
from examples.bank_service._serve import GRACE_ENV, configure_logging, parse_seconds
from examples.bank_service._service import ServiceSettings
from examples.bank_service._telemetry import configure_telemetry

WORKER_APP = "examples.bank_service:worker_app"
"""The import string of the app factory each uvicorn worker process calls."""
MAX_WORKERS = 64

_DIGITS = re.compile(r"[0-9]+")  # ASCII only (int() also reads other scripts' digits)


def _port(text: str) -> int:
    """A TCP port: 0-65535 in ASCII digits (0: any free port)."""
    if _DIGITS.fullmatch(text) and len(text) <= 5 and int(text) <= 65_535:
        return int(text)
    raise argparse.ArgumentTypeError(f"a port is an int in 0..65535 in ASCII digits, not {text!r}")


def _fd(text: str) -> int:
    """A file descriptor: an int >= 0 in ASCII digits."""
    if _DIGITS.fullmatch(text) and len(text) <= 9:
        return int(text)
    raise argparse.ArgumentTypeError(
        f"a file descriptor is an int in 0..999999999 in ASCII digits, not {text!r}"
    )


def _workers(text: str) -> int:
    """A number of worker processes: 1..MAX_WORKERS in ASCII digits."""
    if _DIGITS.fullmatch(text) and len(text) <= 2 and 1 <= int(text) <= MAX_WORKERS:
        return int(text)
    raise argparse.ArgumentTypeError(
        f"workers are an int in 1..{MAX_WORKERS} in ASCII digits, not {text!r}"
    )


def _seconds(text: str) -> float:
    """Seconds: a finite decimal number >= 0 in ASCII digits (like 10 or 2.5)."""
    seconds = parse_seconds(text)
    if seconds is not None:
        return seconds
    raise argparse.ArgumentTypeError(
        f"seconds are a decimal number >= 0 in ASCII digits (like 10 or 2.5), not {text!r}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (and the `PORT` environment variable), checked: an option that
    is not a valid value exits with status 2 and a message naming it."""
    parser = argparse.ArgumentParser(prog="python -m examples.bank_service")
    parser.add_argument(
        "--database",
        default=os.environ.get(DATABASE_ENV, "bank.db"),
        help="the SQLite file or a postgresql:// URL (?schema=name picks the schema;"
        f" default: ${DATABASE_ENV} or bank.db)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=None, help="default: $PORT or 8000")
    parser.add_argument("--fd", type=_fd, default=None, help="serve on this bound socket")
    parser.add_argument(
        "--grace", type=_seconds, default=10.0, help="seconds to finish in-flight requests"
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="uvicorn worker processes sharing the database (default: 1, in this process)",
    )
    args = parser.parse_args(argv)
    if args.workers > 1 and args.fd is not None:
        parser.error("argument --fd: not with --workers above 1 (give --host and --port)")
    if args.port is None:
        try:
            args.port = _port(os.environ.get("PORT", "8000"))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"the PORT environment variable: {exc}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until SIGTERM or SIGINT."""
    args = parse_args(argv)
    configure_logging()
    if args.workers > 1:  # (each worker configures its own telemetry: worker_app)
        _serve_workers(args)
        return
    configure_telemetry()
    settings = ServiceSettings(system_options={"grace": args.grace})
    app = create_app(args.database, settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=args.grace,
    )
    server = uvicorn.Server(config)
    if args.fd is None:
        server.run()
    else:
        # A socket object of the fd's real family (uvicorn's own --fd assumes a Unix
        # socket, and asyncio then leaves Nagle's algorithm on for TCP: +40 ms a reply).
        server.run(sockets=[socket.socket(fileno=args.fd)])


def _serve_workers(args: argparse.Namespace) -> None:
    """Serve from `args.workers` processes; each builds its app from the environment."""
    os.environ[DATABASE_ENV] = args.database
    os.environ[GRACE_ENV] = str(args.grace)
    uvicorn.run(
        WORKER_APP,
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=args.grace,
    )


if __name__ == "__main__":
    main()
