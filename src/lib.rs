//! authd: signup, login and signed access tokens over gRPC.
//!
//! `main.rs` only parses settings and calls [`Application`]; tests build the
//! same [`Application`] on port 0. Layers, each importing only those below
//! it: `app` (the wiring) over `api` (the gRPC edge), `core` (what each RPC
//! means), `store` (persistence), `domain` (validated values); `infra`
//! (metrics, telemetry, TLS) and `domain` import nothing of ours but each
//! other's leaves; `config` only assembles the settings each module owns.

pub mod api;
mod app;
pub mod config;
mod core;
mod domain;
#[cfg(test)]
mod fuzz;
mod infra;
mod store;

pub use app::{
    Application, ServiceAccountCreated, change_role, create_service_account, migrate, rewrap_keys,
    rotate_keys, shutdown_signal,
};
pub use core::keys::{Rewrapped, Rotated};
pub use infra::telemetry;
