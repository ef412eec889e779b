"""Benchmarks: scripts that print a table and save a plot; never asserted in tests."""
