"""The optimisation core: pure numpy and cvxpy, no files, scenarios or command line."""
