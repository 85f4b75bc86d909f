"""Run the bank service under uvicorn: `python -m examples.bank_service --port 8000`.

Logs are JSON lines on stderr, with each request's correlation and command ids. SIGTERM
or Ctrl-C shuts down gracefully: uvicorn stops accepting connections and finishes the
requests in flight, then the app's lifespan drains the actor system and closes the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

import structlog
import uvicorn

from examples.bank_service._app import DATABASE_ENV, ServiceSettings, create_app


def _configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m examples.bank_service")
    parser.add_argument(
        "--database",
        default=os.environ.get(DATABASE_ENV, "bank.db"),
        help=f"the SQLite file (default: ${DATABASE_ENV} or bank.db)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--fd", type=int, default=None, help="serve on this bound socket")
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds to finish in-flight requests"
    )
    args = parser.parse_args(argv)
    _configure_logging()
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


if __name__ == "__main__":
    main()
