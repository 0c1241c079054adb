"""task_service: runs long tasks and streams their progress, status and the task list to push_service.

`core/` holds task records and their state machine (no I/O); `kinds.py` the registry of task kinds;
`runner.py` runs them as asyncio tasks and publishes; `servicer.py` is the gRPC adapter.
"""
