"""The institutional loan fund programme.

- :mod:`~allocator.loans.applications`: the applications table (schema, synthetic set, loader);
- :mod:`~allocator.loans.problem`: the model, its weights and limits, the utility;
- :mod:`~allocator.loans.convex`: the model without a minimum ticket, made exact and certified;
- :mod:`~allocator.loans.mip`: the minimum-ticket model (tangent cuts, HiGHS);
- :mod:`~allocator.loans.terms`: loans rounded to cents, binding labels, the term sheet;
- :mod:`~allocator.loans.allocate`: a scenario solved end to end (``allocate_loans``);
- :mod:`~allocator.loans.run`: the run directory writer;
- :mod:`~allocator.loans.checks`: ``allocator loans check``.
"""
