//! What operators watch and what the service manager is told: Prometheus metrics, log
//! output, and systemd's readiness notifications.

pub mod logging;
pub mod metrics;
pub mod notify;
