"""push_service: owns topics, subscriptions, batching and fan-out to edges (gRPC server).

Layout: `core/` holds the logic without I/O (validation, envelope encoding, batching windows);
`broker/` the engines that carry publications between replicas (in-memory by default);
`hub.py` joins broker and edge streams; `servicer.py` is the thin gRPC adapter.
"""
