"""Tollgate workers: the Triton python-backend generate model and its engine."""
