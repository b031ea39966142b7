//! Progress of pulls and pushes, per layer, for a terminal to draw (the CLI uses indicatif) or an API to stream.

pub use husk_api_types::images::{LayerState, Progress, ProgressSink};
