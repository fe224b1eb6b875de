"""Commands for receipts: keygen, receipt, prove, verify, diff-receipts."""

from __future__ import annotations
