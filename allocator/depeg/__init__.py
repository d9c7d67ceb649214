"""The earlier depeg compensation programme.

- :mod:`~allocator.depeg.positions`: the rule, applied per liquidated position;
- :mod:`~allocator.depeg.reconciliation`: per-user totals against what was paid, reconciled;
- :mod:`~allocator.depeg.compensation`: the two together (``compute_depeg``);
- :mod:`~allocator.depeg.run`: loading a data directory and writing a run directory.
"""
