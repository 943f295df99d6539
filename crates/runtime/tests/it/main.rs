//! The local-process runtime against real processes (`sh` scripts, `python3 -m
//! http.server`, the `customers-mngr` example): lifecycle, ports, secrets, logs, restarts,
//! stops, process groups, limits, users, the bubblewrap sandbox and re-adoption. Every wait is bounded; nothing
//! asserts speed; everything listens on 127.0.0.1 only.

mod adopt;
mod example;
mod harness;
mod isolation;
mod lifecycle;
mod limits;
mod stopping;
