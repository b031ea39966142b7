#![doc = include_str!("../README.md")]

pub mod containers;
pub mod events;
pub mod images;
pub mod networks;
pub mod system;
pub mod volumes;

pub use containers::*;
pub use events::*;
pub use images::*;
pub use networks::*;
pub use system::*;
pub use volumes::*;
