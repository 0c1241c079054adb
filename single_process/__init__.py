"""The push service and the edge in one process: a one-machine deployment (`python -m single_process`).

Each keeps its own package and settings (PUSH_* and EDGE_*); this package only composes them. The push
service serves gRPC on PUSH_PORT as it does alone (internal services publish there, the task service
streams there), and the edge's link to it is an in-process channel (common/inprocess_grpc.py): the same
contract, with no serialization, socket or process hop between the two.
"""
