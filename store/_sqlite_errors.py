"""SQLite's errors as the store's: result codes translated into `StoreError`s."""

from __future__ import annotations

import sqlite3
from typing import Final

from store._errors import StoreCorrupted, StoreError, StoreFull, StoreUnavailable

_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_READONLY: Final = 8
_SQLITE_IOERR: Final = 10
_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_CANTOPEN: Final = 14
_SQLITE_NOTADB: Final = 26
_SQLITE_PROTOCOL: Final = 15


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _translate(exc: BaseException, what: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if not isinstance(exc, sqlite3.Error):
        return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")
    code = _code(exc)
    if code == _SQLITE_FULL:
        return StoreFull(f"{what} failed, the database is full ({exc}); nothing was written")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StoreCorrupted(f"{what} failed, the database file is damaged: {exc}")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreUnavailable(
            f"{what} failed, another connection held the database lock too long: {exc}"
        )
    if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_IOERR):
        return StoreUnavailable(f"{what} failed, the database file cannot be written: {exc}")
    return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")
