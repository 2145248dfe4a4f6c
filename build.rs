//! Compiles the public proto contract with the pure-Rust `protox`, so
//! building authd never needs a system `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message;
use tonic_prost_build::FileDescriptorSet;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["auth/v1/auth.proto", "auth/admin/v1/admin.proto"],
        ["proto"],
    )?;

    // Server reflection serves this set, so grpcurl needs no local proto file.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("auth_descriptor.bin"), fds.encode_to_vec())?;
    // The metrics label calls by these paths, and by nothing a client sends.
    fs::write(out_dir.join("auth_methods.rs"), method_paths(&fds))?;

    // The messages are authd-client's, redacting Debug included: one set of
    // types for the server and its clients. Only the server stubs are new.
    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".auth.v1", "::authd_client::v1")
        .extern_path(".auth.admin.v1", "::authd_client::admin::v1")
        .compile_fds(fds)?;
    Ok(())
}

/// A Rust constant listing every method path (`/package.Service/Method`) the
/// descriptors define.
fn method_paths(fds: &FileDescriptorSet) -> String {
    let mut source = String::from(
        "/// The path of every method of the services in the contract.\n\
         pub const METHODS: &[&str] = &[\n",
    );
    for file in &fds.file {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                source.push_str(&format!("    {path:?},\n"));
            }
        }
    }
    source.push_str("];\n");
    source
}
