//! Sandboxes, containers and what is known about them.
//!
//! `*Config` types are what the engine decided and hands to a driver; `*Record` types are what the store keeps
//! (config + observed state + the driver's own data, so a restarted daemon can find everything again).

mod container;
mod lifecycle;
mod network;
mod resources;
mod sandbox;

pub use container::*;
pub use lifecycle::*;
pub use network::*;
pub use resources::*;
pub use sandbox::*;

/// A new random 64-hex-character ID.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// A name made of two words, as Docker names unnamed containers (`brave_turing_3f2a`).
pub fn random_name() -> String {
    const ADJ: &[&str] = &[
        "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nimble", "proud", "quiet", "sharp", "swift", "tender", "upbeat", "vivid", "witty", "zen",
    ];
    const NOUN: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "fermi", "gauss", "hopper", "kepler", "lovelace",
        "maxwell", "newton", "noether", "pascal", "ritchie", "shannon", "thompson", "torvalds",
        "turing", "wozniak", "yalow",
    ];
    let a = ADJ[rand::random::<usize>() % ADJ.len()];
    let n = NOUN[rand::random::<usize>() % NOUN.len()];
    format!("{a}_{n}_{:04x}", rand::random::<u16>())
}

#[cfg(test)]
mod tests;
