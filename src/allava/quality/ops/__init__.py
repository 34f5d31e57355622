"""Built-in QC operators, one per module; `allava.quality.base.load_builtin_ops` imports them all."""
