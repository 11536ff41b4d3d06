//! prewarm's protobuf messages. This is the only crate that knows protobuf's generated types;
//! the `.proto` files under `proto/` are the formats' documentation.

#![allow(missing_docs)] // generated code; the .proto files carry the documentation

/// Storage formats: manifests and pack indexes.
pub mod store {
    include!(concat!(env!("OUT_DIR"), "/prewarm.store.v1.rs"));
}

/// The control plane: the coordinator's gRPC service and its messages.
#[cfg(feature = "grpc")]
#[allow(clippy::all)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/prewarm.v1.rs"));
}

pub use prost::{DecodeError, Message};
