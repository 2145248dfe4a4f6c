//! What each RPC means, independent of gRPC: accounts and sessions, the
//! hashing stage, throttling, refresh tokens and signing keys. Inputs are
//! validated domain values; outputs are domain values or a
//! [`domain::Error`](crate::domain::Error).

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod api_key;
pub(crate) mod audit;
pub(crate) mod hasher;
pub(crate) mod kek;
pub(crate) mod keys;
pub(crate) mod mail;
pub(crate) mod passwords;
pub(crate) mod refresh_token;
pub(crate) mod revocations;
pub(crate) mod throttle;
pub(crate) mod tokens;
pub(crate) mod totp;
