"""allocator: optimisation-based budget allocation for compensation programmes."""

__version__ = "0.1.0"
