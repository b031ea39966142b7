//! Measures sandbox network setup + teardown with the real CNI plugins: N rounds of (new namespace, setup,
//! teardown), on a private bridge and subnet, printing mean / p50 / p95 of each phase and of each plugin call.
//!
//! Run as root: `cargo run -p husk-net --release --example net-bench -- [ROUNDS] [--ports] [--netns-first]`
//! (`--ports` publishes one 127.0.0.1 port per sandbox, so portmap has work to do; `--netns-first` deletes the
//! namespace before the teardown, as a driver may when it unpins a sandbox: DEL then runs without it and the
//! kernel removes the veth on its own time).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use husk_core::{NetworkConfig, PortMapping};
use husk_net::{CniConfig, Networks};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

type Samples = Arc<Mutex<BTreeMap<String, Vec<Duration>>>>;

/// Collects the `cni plugin ran` events husk-net emits for every plugin call.
struct PluginTimes(Samples);

#[derive(Default)]
struct Fields {
    plugin: String,
    command: String,
    micros: u64,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = value.to_string(),
            "command" => self.command = value.to_string(),
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "micros" {
            self.micros = value;
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PluginTimes {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if !fields.plugin.is_empty() {
            let key = format!("{} {}", fields.command, fields.plugin);
            let mut samples = self.0.lock().unwrap_or_else(|p| p.into_inner());
            samples
                .entry(key)
                .or_default()
                .push(Duration::from_micros(fields.micros));
        }
    }
}

fn main() {
    let mut rounds = 50;
    let mut ports = false;
    let mut netns_first = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--ports" => ports = true,
            "--netns-first" => netns_first = true,
            n => {
                rounds = n
                    .parse()
                    .expect("usage: net-bench [ROUNDS] [--ports] [--netns-first]")
            }
        }
    }
    let plugin_samples: Samples = Arc::default();
    tracing_subscriber::registry()
        .with(PluginTimes(plugin_samples.clone()))
        .init();

    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = CniConfig::with_root(dir.path());
    config.conf_dir = dir.path().join("cni");
    config.default_network = format!("hkbench-{tag}");
    config.default_bridge = format!("hkb{tag}");
    config.default_subnet = format!(
        "10.{}.{}.0/24",
        200 + rand::random::<u8>() % 50,
        rand::random::<u8>()
    );
    let _cleanup = Cleanup(config.default_bridge.clone());
    let networks = Networks::open(config).expect("open networks");

    let mut setup = Vec::new();
    let mut teardown = Vec::new();
    for round in 0..=rounds {
        let ns = format!("hkbench-{tag}-{round}");
        run("ip", &["netns", "add", &ns]);
        let path = std::path::PathBuf::from("/run/netns").join(&ns);
        let id = format!("{tag}{round:058}");
        let mut request = NetworkConfig::default();
        if ports {
            let port = 30000 + (round % 20000) as u16;
            request.ports =
                vec![PortMapping::parse(&format!("127.0.0.1:{port}:80")).expect("port")];
        }
        let started = Instant::now();
        let status = networks.setup(&id, &path, &request);
        let set_up = started.elapsed();
        if netns_first {
            run("ip", &["netns", "del", &ns]);
        }
        let started = Instant::now();
        let torn = networks.teardown(&id, (!netns_first).then_some(path.as_path()));
        let torn_down = started.elapsed();
        if !netns_first {
            run("ip", &["netns", "del", &ns]);
        }
        status.expect("setup");
        torn.expect("teardown");
        // Round 0 warms up (creates the bridge and the shared iptables chains) and is not counted.
        if round == 0 {
            plugin_samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            continue;
        }
        setup.push(set_up);
        teardown.push(torn_down);
    }
    let total: Vec<Duration> = setup.iter().zip(&teardown).map(|(a, b)| *a + *b).collect();
    println!(
        "{rounds} rounds of setup + teardown on a bridge network{}{}",
        if ports { ", one published port" } else { "" },
        if netns_first {
            ", namespace deleted before teardown"
        } else {
            ""
        }
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9}",
        "", "mean ms", "p50 ms", "p95 ms"
    );
    print_row("setup", &setup);
    print_row("teardown", &teardown);
    print_row("setup + teardown", &total);
    println!("per plugin call:");
    let samples = plugin_samples.lock().unwrap_or_else(|p| p.into_inner());
    let mut keys: Vec<&String> = samples.keys().collect();
    keys.sort_by_key(|k| (!k.starts_with("ADD"), (*k).clone()));
    for key in keys {
        print_row(&format!("  {key}"), &samples[key]);
    }
    let plugins: Duration = samples.values().flatten().sum();
    let all: Duration = total.iter().sum();
    println!(
        "plugins account for {:.0}% of the time; husk's own work (loopback, cache, port checks) for the rest",
        100.0 * plugins.as_secs_f64() / all.as_secs_f64()
    );
}

fn print_row(name: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = ms(sorted.iter().sum::<Duration>()) / sorted.len().max(1) as f64;
    let pick = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .map(ms)
    };
    println!(
        "{name:<24} {mean:>9.1} {:>9.1} {:>9.1}",
        pick(0.5).unwrap_or_default(),
        pick(0.95).unwrap_or_default()
    );
}

fn run(program: &str, args: &[&str]) {
    let ok = Command::new(program)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{program} {args:?} failed");
}

/// Removes the benchmark's bridge and its guard rule.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        let rule = format!("husk: no localnet access from {}", self.0);
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("iptables-save -t filter | grep -F -- '{rule}' | sed 's/^-A/-D/' | xargs -r -L1 iptables"))
            .status();
    }
}
