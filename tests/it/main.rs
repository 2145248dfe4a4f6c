//! The integration tests, one binary: the real server through the generated
//! client, one module per capability, most tests on SQLite and PostgreSQL.
//! One binary links once instead of once per file; run one capability with
//! `cargo test --test it signup::`.
#![allow(
    clippy::expect_used,
    reason = "a test's expect is its assertion, helpers included"
)]

mod support;

mod architecture;

mod admin_users;
mod audit;

mod cli;
mod clients;
mod credentials;
mod email_verification;
mod faults;
mod grpc_web;
mod hostile;
mod key_encryption;
mod keys;
mod limits;
mod login;
mod observability;
mod outbox;
mod overload;
mod password_reset;
mod passwords;
mod processes;
mod revocations;
mod server;
mod service_accounts;
mod sessions;
mod sessions_devices;
mod signup;
mod tls;
mod tokens;
mod totp;
mod walkthrough;
