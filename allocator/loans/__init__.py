"""The institutional loan fund programme."""
