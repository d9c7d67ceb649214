"""The earlier depeg compensation programme."""
