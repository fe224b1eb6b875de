"""Commands that write a cleaned copy and the removal report: clean, report, apply-removals."""

from __future__ import annotations
