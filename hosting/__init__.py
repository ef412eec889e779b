"""Tollgate hosting: fetching `tritonserver`, writing model configurations, starting and
supervising the server, and deciding which registry versions it holds."""
