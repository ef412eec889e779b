"""`/v2`: several inputs per call, token ids and timings, RFC 9457 errors."""
