"""The near-real-time infill service behind ``radinfill serve``.

``config`` (TOML), ``watcher`` and ``intake`` (file events, scans, the work queue), ``ledger``
(SQLite state), ``window`` (rolling context), ``pipeline`` (one file end to end), ``outputs``
(atomic RADOLAN, netCDF and sidecar files; quarantine), ``models`` (loading, checks, hot swap),
``shadow`` (online quality estimate), ``telemetry`` (metrics, logs), ``sdnotify`` (systemd) and
``service`` (threads and signals that tie them together).
"""
