//! A client for authd's gRPC API: the generated tonic client and the message
//! types of `auth.v1`, from the same proto file the server is built from.
//!
//! ```no_run
//! use authd_client::v1::{LoginRequest, auth_service_client::AuthServiceClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut authd = AuthServiceClient::connect("http://127.0.0.1:50051").await?;
//! let login = authd
//!     .login(LoginRequest {
//!         email: "ada@example.com".into(),
//!         password: "correct horse battery".into(),
//!     })
//!     .await?
//!     .into_inner();
//! println!("access token expires in {}s", login.expires_in);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

/// The `auth.v1` package: `AuthService` and its messages.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub)]
    tonic::include_proto!("auth.v1");
}
