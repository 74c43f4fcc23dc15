//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [root.join("fjord/v1/fjord.proto"), root.join("fjord/v1/internal.proto")];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("fjord_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // `bytes` fields as `Bytes`, so batches move between the network and the
    // log without an extra copy.
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
