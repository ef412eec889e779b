"""Tollgate model registry: the auditable SQL record of every model version and alias."""
