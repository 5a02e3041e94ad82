//! Generated code for the `imageflow.v1` gRPC contracts (see `proto/`).
//! Nothing here is hand-written except the re-exports.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

pub mod imageflow {
    pub mod v1 {
        tonic::include_proto!("imageflow.v1");
    }
}

pub use imageflow::v1;

/// Client of the KServe v2 inference protocol (`inference.GRPCInferenceService`,
/// served by Triton and MLServer).
pub mod inference {
    tonic::include_proto!("inference");
}

/// Encoded `FileDescriptorSet` for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("imageflow_descriptor");
