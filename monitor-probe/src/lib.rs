//! monitor-probe: not built yet (see the project's issues).
