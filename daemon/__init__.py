"""The near-real-time infill service (watcher, ledger, window, pipeline, writer)."""
