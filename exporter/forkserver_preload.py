"""Imported by the fork server that starts probe workers (Linux), before it forks any.

Everything a worker needs is imported once here, then frozen out of the cyclic collector's
sight (``gc.freeze``): a worker's collections then never write to these objects' pages, so
they stay shared with the fork server and the other workers instead of being copied into
each worker (bench/run.py shows the workers' PSS)."""

import gc

from . import cli, eventloop, logs, workers  # noqa: F401  (the imports are the point)

gc.collect()
gc.freeze()
