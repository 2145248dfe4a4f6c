//! Compiles authd's public proto contract with the pure-Rust `protox`, so
//! building the client never needs a system `protoc`.

include!("secret_messages.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    println!("cargo:rerun-if-changed=secret_messages.rs");
    let fds = protox::compile(["auth/v1/auth.proto"], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        // `src/lib.rs` gives them a redacting Debug.
        .skip_debug(SECRET_MESSAGES)
        .compile_fds(fds)?;
    Ok(())
}
