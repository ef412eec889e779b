"""The Triton client: generate requests over gRPC streams to every Triton endpoint."""
