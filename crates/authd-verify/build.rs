//! Generates the server side of authd's `AuthService` for the tests' fake
//! authd (included only by the tests of `src/revocations.rs`), over the message
//! types of `authd-client`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    let fds = protox::compile(["auth/v1/auth.proto"], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        // The fake answers only what the tests call; the rest is UNIMPLEMENTED.
        .generate_default_stubs(true)
        .extern_path(".auth.v1", "::authd_client::v1")
        .compile_fds(fds)?;
    Ok(())
}
