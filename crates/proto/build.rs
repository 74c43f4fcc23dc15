//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!(): a build-script binary
    // reused from a target directory shared by two checkouts would
    // otherwise compile the other checkout's .proto files.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [root.join("fjord/v1/fjord.proto"), root.join("fjord/v1/internal.proto")];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection serves the public API only: the broker-to-broker service
    // is no business of grpcurl's or a GUI's.
    let public = protox::compile(&files[..1], [&root])?;
    std::fs::write(out.join("fjord_descriptor.bin"), prost::Message::encode_to_vec(&public))?;
    let fds = protox::compile(&files, [&root])?;
    // `bytes` fields as `Bytes`, so batches move between the network and the
    // log without an extra copy.
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
