"""Runnable examples of esactors embedded in other software (not part of the library)."""

from __future__ import annotations
