"""Typed settings: scenario files, their validation and their defaults."""
