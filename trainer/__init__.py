"""Tollgate trainer: from raw text to a published, quantized model version."""
