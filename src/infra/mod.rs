//! The process around the service: metrics, logs and traces, TLS. Nothing
//! here knows what authd does.

pub(crate) mod metrics;
pub mod telemetry;
pub(crate) mod tls;
