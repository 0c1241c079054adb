"""Pieces every service shares: gRPC server wiring, retry backoff, topic grammar, interest tables."""
