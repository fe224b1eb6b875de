"""Engines run per-shard tasks: local processes (default) or a Ray cluster.

An engine only schedules (see `clearset.engines.base`); what a command does is decided
by its orchestrator in `clearset.runs`, the same whatever the engine. Engines other than
`local` are imported only when asked for: Ray is an optional extra.
"""

from __future__ import annotations

import importlib

from clearset.engines.base import Engine, Outcome, Task
from clearset.errors import InputError

#: Engine name -> "module:class". A third engine (Spark, Dask) is one module and one line.
ENGINES = {
    "local": "clearset.engines.local:LocalEngine",
    "ray": "clearset.engines.ray:RayEngine",
}


def make_engine(
    name: str = "local", *, workers: int | None = None, address: str | None = None
) -> Engine:
    """The engine `name`, for `workers` tasks at once (default: one per core here, or the
    cluster's); `address` is where the cluster is, for engines that have one."""
    if name not in ENGINES:
        raise InputError(f"--engine {name}: unknown engine (known: {', '.join(ENGINES)})")
    if address is not None and name == "local":
        raise InputError("--address: only with --engine ray (the local engine has no cluster)")
    module, cls = ENGINES[name].split(":")
    engine_class = getattr(importlib.import_module(module), cls)
    if address is None:
        return engine_class(workers)
    return engine_class(workers, address=address)


__all__ = ["ENGINES", "Engine", "Outcome", "Task", "make_engine"]
