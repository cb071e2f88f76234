//! tracer: finds which CPU features a live process's reachable code uses.
