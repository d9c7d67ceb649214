"""Input tables: schemas, loading, validation and the synthetic generator."""
