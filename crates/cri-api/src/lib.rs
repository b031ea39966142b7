#![doc = include_str!("../README.md")]

/// CRI v1 (`runtime.v1`): the messages, `runtime_service_client`/`runtime_service_server` and
/// `image_service_client`/`image_service_server`, generated from `proto/api.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}
