"""Quality control by the ten principles of the VLIT review (stats first, then decisions).

Operators (one module each under `ops/`) compute numbers per record; the pipeline caches them by
record content and operator settings, so changing a threshold in the YAML recomputes nothing.
"""
from allava.quality.base import OPS, DatasetOp, Op, QCRecord, register_op

__all__ = ["OPS", "DatasetOp", "Op", "QCRecord", "register_op"]
