//! Per-layer progress bars for pulls and pushes (indicatif), drawn only on a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;

use husk_api_types::{LayerState, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Which way the bytes go (the words differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a registry.
    Pull,
    /// To a registry.
    Push,
}

/// Where bars are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// Standard output (`husk pull`, `husk push`).
    Stdout,
    /// Standard error (`husk run`, whose stdout is the container's).
    Stderr,
}

impl Screen {
    /// Whether this stream is a terminal.
    pub fn is_terminal(self) -> bool {
        match self {
            Screen::Stdout => std::io::stdout().is_terminal(),
            Screen::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

/// Bars for one pull or push: one per layer, in the order the layers were announced.
pub struct Bars {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    direction: Direction,
    style: ProgressStyle,
    done_style: ProgressStyle,
}

/// The first 12 hex digits of a digest, as Docker shows layers.
fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// The words for a layer's state.
pub fn state_text(direction: Direction, state: LayerState) -> &'static str {
    match (direction, state) {
        (_, LayerState::Waiting) => "Waiting",
        (Direction::Pull, LayerState::Exists) => "Already exists",
        (Direction::Push, LayerState::Exists) => "Layer already exists",
        (_, LayerState::Downloading) => "Downloading",
        (_, LayerState::Unpacking) => "Extracting",
        (_, LayerState::Uploading) => "Pushing",
        (Direction::Pull, LayerState::Complete) => "Pull complete",
        (Direction::Push, LayerState::Complete) => "Pushed",
    }
}

impl Bars {
    /// Bars drawn on `screen`.
    pub fn new(direction: Direction, screen: Screen) -> Bars {
        let target = match screen {
            Screen::Stdout => ProgressDrawTarget::stdout(),
            Screen::Stderr => ProgressDrawTarget::stderr(),
        };
        Bars::with_target(direction, target)
    }

    /// Bars drawn to `target` (hidden in tests).
    pub fn with_target(direction: Direction, target: ProgressDrawTarget) -> Bars {
        let style = ProgressStyle::with_template(
            "{prefix}: {msg:<14} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let done_style = ProgressStyle::with_template("{prefix}: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: HashMap::new(),
            direction,
            style,
            done_style,
        }
    }

    /// Shows one event.
    pub fn event(&mut self, progress: &Progress) {
        match progress {
            Progress::Resolved { reference, .. } => {
                let _ = self.multi.println(format!("Pulling {reference}"));
            }
            Progress::Layer {
                digest,
                state,
                current,
                total,
            } => self.layer(digest, *state, *current, *total),
            Progress::Done { .. } => {}
        }
    }

    fn layer(&mut self, digest: &str, state: LayerState, current: u64, total: u64) {
        let bar = self
            .bars
            .entry(digest.to_string())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(total));
                bar.set_style(self.style.clone());
                bar.set_prefix(short_digest(digest));
                bar
            })
            .clone();
        bar.set_message(state_text(self.direction, state));
        match state {
            LayerState::Exists | LayerState::Complete => {
                bar.set_style(self.done_style.clone());
                bar.finish_with_message(state_text(self.direction, state));
            }
            _ => {
                bar.set_length(total);
                bar.set_position(current.min(total));
            }
        }
    }

    /// Layers shown so far and how many are finished.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        let done = self.bars.values().filter(|b| b.is_finished()).count();
        (self.bars.len(), done)
    }

    /// Clears unfinished bars (a failed transfer) and stops drawing.
    pub fn finish(&self) {
        for bar in self.bars.values().filter(|b| !b.is_finished()) {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_layer_finished_when_stored() {
        let mut bars = Bars::with_target(Direction::Pull, ProgressDrawTarget::hidden());
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        bars.event(&Progress::Layer {
            digest: a.clone(),
            state: LayerState::Waiting,
            current: 0,
            total: 100,
        });
        bars.event(&Progress::Layer {
            digest: b.clone(),
            state: LayerState::Exists,
            current: 50,
            total: 50,
        });
        assert_eq!(bars.counts(), (2, 1));
        bars.event(&Progress::Layer {
            digest: a.clone(),
            state: LayerState::Downloading,
            current: 40,
            total: 100,
        });
        assert_eq!(bars.bars[&a].position(), 40);
        bars.event(&Progress::Layer {
            digest: a,
            state: LayerState::Complete,
            current: 100,
            total: 100,
        });
        assert_eq!(bars.counts(), (2, 2));
        assert_eq!(short_digest(&b), "bbbbbbbbbbbb");
    }

    #[test]
    fn words_like_docker() {
        assert_eq!(
            state_text(Direction::Pull, LayerState::Complete),
            "Pull complete"
        );
        assert_eq!(
            state_text(Direction::Push, LayerState::Exists),
            "Layer already exists"
        );
    }
}
