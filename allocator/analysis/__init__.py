"""The read side: finance checks, audit, explanations, sensitivity, metrics, sweeps."""
