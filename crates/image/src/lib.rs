//! husk's image service.
//!
//! - [`ImageStore`]: content-addressed blobs (`blobs/sha256/<hex>`, verified on write), one unpacked copy of each
//!   layer (`layers/<diff-id hex>/`, an overlayfs lower dir shared read-only), image records in the husk store.
//! - [`ImageStore::load`]: `docker save` archives (legacy and OCI-style) and OCI image-layout tarballs.
//! - Safe unpacking ([`unpack`]): a layer can never write outside its directory; whiteouts and opaque directories
//!   become overlayfs's own; size and entry limits bound what a hostile archive can write.
//! - Names normalised as Docker does ([`mod@reference`]), resolution by name, digest, ID or ID prefix, Docker's
//!   removal rules, tags.
//! - Registries ([`ImageStore::pull`], [`ImageStore::push`], [`ImageStore::login`]) through `oci-client`, with
//!   per-layer [`Progress`]; [`ImageStore::save`], [`ImageStore::commit`], [`PullPolicy`], prune and disk usage.
//! - Root filesystems are mounted by `husk_fs::mount_rootfs` over the layers unpacked here.
//!
//! The crate's README.md has the whole API in one table, Docker's removal rules, the on-disk layout and the
//! benchmark.
//!
//! Everything returns [`husk_core::Error`]; archive and layer problems are `InvalidArgument` with a message naming
//! the blob or entry, limits are `LimitExceeded`, missing images `NotFound`, refusals `Conflict`.

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
