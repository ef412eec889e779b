"""The request path: one generation from an authenticated request to the worker's last
response (input filter, routing by alias, rate limits, response cache, the Triton call)."""
