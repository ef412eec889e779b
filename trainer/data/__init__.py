"""The data pipeline: read, validate, scrub PII, drop outliers and duplicates, hash, split."""
