"""Evaluation: ``benchmarks/`` (one module per benchmark, a registry), ``metrics/`` (the anchors'
answer rules), ``generate.py`` (batched greedy answers), ``runner.py`` (answer cache, resume),
``judge.py`` (OpenAI-compatible judge) and ``cli.py`` (``allava eval run|score|report``)."""
