"""Orchestrators: one per command. Each plans its shards' tasks, skips what is done,
hands the rest to an engine (`clearset.engines`), retries what failed, and gathers the
results. Per-shard work lives with its stage (`clearset.stages`)."""

from clearset.runs.clean import apply_removals, clean_run
from clearset.runs.match import run_match
from clearset.runs.scan import ScanIncomplete, ScanResult, ScanUnaccounted, Split, run_scan
from clearset.stages.match import MatchJob
from clearset.stages.scan import ScanSettings

__all__ = [
    "MatchJob",
    "ScanIncomplete",
    "ScanResult",
    "ScanSettings",
    "ScanUnaccounted",
    "Split",
    "apply_removals",
    "clean_run",
    "run_match",
    "run_scan",
]
