"""Benchmarks: scripts that print figures (run with `make bench`)."""

from __future__ import annotations
