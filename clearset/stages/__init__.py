"""Per-shard work of each stage, as plain functions of picklable arguments that any
engine runs: `scan.scan_task` (hash, match, clean one shard), `match.match_task`
(re-match one scanned shard); the clean stage's are `clearset.stages.clean.clean_run_shard`
and `clearset.stages.clean.apply_shard`."""
