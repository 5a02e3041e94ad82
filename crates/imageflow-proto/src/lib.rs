//! Generated code for the `imageflow.v1` gRPC contracts (see `proto/`).
//! Hand-written: the re-exports and [`convert`], the one mapping from the
//! pipeline's typed values (resize quality, filter type) to the wire enums,
//! kept here so every client shares it without a dependency cycle.

#![allow(missing_docs, missing_debug_implementations)]

// Generated code is not linted; `convert` is.
#[allow(clippy::all)]
pub mod imageflow {
    pub mod v1 {
        tonic::include_proto!("imageflow.v1");
    }
}

pub use imageflow::v1;

pub mod convert;
pub mod transport;

/// Client of the KServe v2 inference protocol (`inference.GRPCInferenceService`,
/// served by Triton and MLServer).
#[allow(clippy::all)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// Encoded `FileDescriptorSet` for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("imageflow_descriptor");
