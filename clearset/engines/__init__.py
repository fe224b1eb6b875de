"""Engines run the per-shard function over a source: local processes (default) or Ray."""

from clearset.engines.local import MatchJob, ScanIncomplete, ScanResult, run_match, run_scan
from clearset.engines.shard import ScanSettings, scan_shard

__all__ = [
    "MatchJob",
    "run_match",
    "ScanIncomplete",
    "ScanResult",
    "ScanSettings",
    "run_scan",
    "scan_shard",
]
