//! Generates the `imageflow.v1` messages and services plus a file descriptor set
//! for gRPC reflection, plus a client for the KServe v2 inference protocol
//! (`inference.GRPCInferenceService`, what Triton and MLServer serve). `protoc`
//! comes from the `protoc-bin-vendored` crate, so a build needs nothing
//! installed beyond cargo; `PROTOC` still wins when set.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "imageflow/v1/common.proto",
    "imageflow/v1/resize.proto",
    "imageflow/v1/filter.proto",
    "imageflow/v1/ai_detection.proto",
];

/// The KServe v2 inference protocol; only the client is generated (ai-detect-svc
/// calls a Triton server), into its own `inference` module.
const INFERENCE_PROTOS: &[&str] = &["inference/grpc_service.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: cargo reuses
    // a compiled build script across checkouts at different paths that share
    // one target folder (CI clones), and a baked path points into another,
    // possibly deleted, checkout.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?;
    let proto_root = PathBuf::from(manifest_dir).join("../../proto");
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    tonic_build_with(&proto_root, protoc.clone())?;
    inference_client(&proto_root, protoc)?;
    // Listing every file keeps cargo from re-running the build script on any
    // change in the crate (its default when no rerun-if-changed is printed).
    for proto in PROTOS.iter().chain(INFERENCE_PROTOS) {
        println!(
            "cargo:rerun-if-changed={}",
            proto_root.join(proto).display()
        );
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}

fn tonic_build_with(
    proto_root: &std::path::Path,
    protoc: PathBuf,
) -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("imageflow_descriptor.bin"))
        .compile_with_config(config, &files, &[proto_root.to_path_buf()])?;
    Ok(())
}

fn inference_client(
    proto_root: &std::path::Path,
    protoc: PathBuf,
) -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<PathBuf> = INFERENCE_PROTOS
        .iter()
        .map(|p| proto_root.join(p))
        .collect();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(config, &files, &[proto_root.to_path_buf()])?;
    Ok(())
}
