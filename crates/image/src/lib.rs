#![doc = include_str!("../README.md")]

pub mod archive;
pub mod auth;
pub mod blobs;
pub mod commit;
pub mod config;
pub mod digest;
pub mod export;
pub mod image;
pub mod policy;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use auth::{CredentialStore, Credentials};
pub use commit::CommitOptions;
pub use config::{ImageConfig, Limits, RegistryConfig};
pub use digest::Digest;
pub use export::{PushOptions, PushedImage};
pub use image::{BlobRef, Healthcheck, Image, ImageLayer, LayerRecord, Platform, RunConfig};
pub use policy::PullPolicy;
pub use progress::{LayerState, Progress, ProgressSink};
pub use pull::{PullOptions, PulledImage};
pub use reference::{ImageName, familiar, normalize};
pub use store::{
    DiskUsage, ImageStore, ImageUsage, LoadOptions, LoadedImage, PruneReport, Removed,
};
