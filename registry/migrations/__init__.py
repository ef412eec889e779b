"""Alembic migrations of the registry schema; applied by `python -m registry init`."""
