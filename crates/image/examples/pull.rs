//! Pulls one image into an image store, for benchmarks until the CLI exists:
//!
//!     pull --root DIR [--platform os/arch] [--quiet] REFERENCE
//!
//! Prints the image ID and the elapsed seconds (`<id> <seconds>`), and per-layer progress on stderr unless --quiet.

use std::sync::Arc;
use std::time::Instant;

use husk_image::{ImageConfig, ImageStore, Platform, Progress, ProgressSink, PullOptions};

fn usage() -> ! {
    eprintln!("usage: pull --root DIR [--platform os/arch] [--quiet] REFERENCE");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut root, mut platform, mut quiet, mut reference) = (None, None, false, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next(),
            "--platform" => platform = args.next(),
            "--quiet" | "-q" => quiet = true,
            _ if reference.is_none() && !a.starts_with('-') => reference = Some(a),
            _ => usage(),
        }
    }
    let (Some(root), Some(reference)) = (root, reference) else {
        usage()
    };
    let root = std::path::PathBuf::from(root);
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("pull: create {}: {e}", root.display());
        std::process::exit(1);
    }
    let result: husk_core::Result<(husk_image::PulledImage, f64)> = async {
        let db = Arc::new(husk_store::Store::open(&root.join("husk.db"))?);
        let store = ImageStore::open(root.join("images"), db, ImageConfig::default())?;
        let platform = platform.map(|p| Platform::parse(&p)).transpose()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let printer = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                if quiet {
                    continue;
                }
                match p {
                    Progress::Layer {
                        digest,
                        state,
                        current,
                        total,
                    } => eprintln!("{} {state:?} {current}/{total}", &digest[7..19]),
                    other => eprintln!("{other:?}"),
                }
            }
        });
        let started = Instant::now();
        let pulled = store
            .pull(
                &reference,
                &PullOptions {
                    platform,
                    progress: ProgressSink(Some(tx)),
                    ..Default::default()
                },
            )
            .await?;
        let elapsed = started.elapsed().as_secs_f64();
        let _ = printer.await;
        Ok((pulled, elapsed))
    }
    .await;
    match result {
        Ok((pulled, elapsed)) => println!("{} {elapsed:.3}", pulled.id),
        Err(e) => {
            eprintln!("pull: {e}");
            std::process::exit(1);
        }
    }
}
