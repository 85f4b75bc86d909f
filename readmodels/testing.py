"""Helpers to test projections as pure folds (`ProjectionSpec`)."""

from __future__ import annotations

from readmodels._testing import ProjectionSpec

__all__ = ["ProjectionSpec"]
