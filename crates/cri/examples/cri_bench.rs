//! Pod and container lifecycle benchmark against any CRI runtime (husk, containerd, CRI-O, ...).
//!
//! ```text
//! cargo run --release -p husk-cri --example cri_bench -- --endpoint unix:///run/husk/cri.sock \
//!     [--count 40] [--warmup 1] [--interval-ms 0] [--image IMAGE] [--stop-timeout 0] [--title TEXT] \
//!     [-- COMMAND...]
//! ```
//!
//! Each of the `--count` sequential samples is one pod's whole life, the way kubelet drives it: RunPodSandbox
//! (the runtime's default network, so its CNI bridge; a name and uid of its own), CreateContainer (`--image`,
//! running COMMAND, `sleep 3600` by default), StartContainer, ContainerStatus (which must say RUNNING),
//! StopContainer (`--stop-timeout` seconds, 0: killed at once), RemoveContainer, StopPodSandbox,
//! RemovePodSandbox. Every RPC is timed on its own, from the request leaving to its answer, over one gRPC
//! connection kept for the whole run. The image is pulled first if the runtime does not have it; the
//! `--warmup` lifecycles before the samples are not counted.
//!
//! It prints the median and p90 of each RPC in milliseconds, in the layout of critest's `-benchmark` summary
//! (`bench-summary.py`): p90 is the `int(0.9 n)`-th smallest sample, the median that of Python's
//! `statistics.median`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::image_service_client::ImageServiceClient;
use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// The RPCs of one sample, in the order they are made.
const OPS: [&str; 8] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "ContainerStatus",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

#[derive(Parser)]
#[command(about = "Times each RPC of N sequential pod lifecycles on a CRI runtime")]
struct Args {
    /// The runtime's CRI socket, `unix:///path` (or a bare path).
    #[arg(long)]
    endpoint: String,
    /// Samples (whole pod lifecycles), one after another.
    #[arg(long, short = 'n', default_value_t = 40)]
    count: usize,
    /// Lifecycles run first and not counted.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// The container's image (pulled first if the runtime does not have it).
    #[arg(long, default_value = "registry.k8s.io/e2e-test-images/busybox:1.29-2")]
    image: String,
    /// Milliseconds to wait between lifecycles, untimed (0: none; work a runtime finishes in the background
    /// after RemovePodSandbox then no longer overlaps the next pod).
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// StopContainer's timeout in seconds (0: the runtime kills at once).
    #[arg(long, default_value_t = 0)]
    stop_timeout: i64,
    /// First line of the output (default: the runtime's name and version from the Version RPC).
    #[arg(long)]
    title: Option<String>,
    /// The container's command.
    #[arg(trailing_var_arg = true, default_values = ["sleep", "3600"])]
    command: Vec<String>,
}

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let channel = connect(&args.endpoint).await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);

    let version = rt
        .version(cri::VersionRequest::default())
        .await?
        .into_inner();
    ensure_image(&mut images, &args.image).await?;

    let tag = format!("{:x}", std::process::id());
    for i in 0..args.warmup {
        lifecycle(&mut rt, &args, &format!("{tag}-w{i}")).await?;
    }
    let mut samples: Vec<[Duration; OPS.len()]> = Vec::with_capacity(args.count);
    for i in 0..args.count {
        if args.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        samples.push(lifecycle(&mut rt, &args, &format!("{tag}-{i}")).await?);
    }

    let title = args
        .title
        .clone()
        .unwrap_or_else(|| format!("{} {}", version.runtime_name, version.runtime_version));
    println!(
        "{title}, cri_bench, {} sequential samples, median (p90) ms",
        samples.len()
    );
    for (i, op) in OPS.iter().enumerate() {
        let (median, p90) = median_p90(samples.iter().map(|s| s[i]).collect());
        println!("{op:16}  median {median:7.1}  p90 {p90:7.1}");
    }
    let (median, p90) = median_p90(samples.iter().map(|s| s.iter().sum()).collect());
    println!("{:16}  median {median:7.1}  p90 {p90:7.1}", "Lifecycle");
    Ok(())
}

/// A gRPC channel over the unix socket `endpoint` names.
async fn connect(endpoint: &str) -> Result<Channel, Error> {
    let path = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
    if !path.is_absolute() {
        return Err(format!("--endpoint {endpoint}: not unix:///ABSOLUTE/PATH").into());
    }
    let channel = Endpoint::from_static("http://cri")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| format!("connecting to {endpoint}: {e}"))?;
    Ok(channel)
}

/// Pulls `image` unless the runtime has it already.
async fn ensure_image(images: &mut ImageServiceClient<Channel>, image: &str) -> Result<(), Error> {
    let spec = cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    };
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        })
        .await?
        .into_inner();
    if status.image.is_none() {
        images
            .pull_image(cri::PullImageRequest {
                image: Some(spec),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("pulling {image}: {e}"))?;
    }
    Ok(())
}

/// One pod's life; the time each RPC took, in the order of `OPS`. A pod left by a failed step is removed.
async fn lifecycle(
    rt: &mut RuntimeServiceClient<Channel>,
    args: &Args,
    name: &str,
) -> Result<[Duration; OPS.len()], Error> {
    let mut pod = None;
    let result = timed_lifecycle(rt, args, name, &mut pod).await;
    if let (Err(_), Some(pod_sandbox_id)) = (&result, pod) {
        // Best effort: removing a pod stops and removes its containers too.
        let _ = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_sandbox_id.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id })
            .await;
    }
    result
}

async fn timed_lifecycle(
    rt: &mut RuntimeServiceClient<Channel>,
    args: &Args,
    name: &str,
    pod: &mut Option<String>,
) -> Result<[Duration; OPS.len()], Error> {
    let mut times = [Duration::ZERO; OPS.len()];
    // Times RPC number `$op` of `OPS`, naming it in the error if it fails.
    macro_rules! timed {
        ($op:expr, $call:expr) => {{
            let start = Instant::now();
            let result = $call.await;
            times[$op] = start.elapsed();
            let op = OPS[$op];
            result
                .map_err(|e| format!("{op} (pod {name}): {e}"))?
                .into_inner()
        }};
    }

    let pod_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("cri-bench-{name}"),
            uid: format!("cri-bench-uid-{name}"),
            namespace: "cri-bench".into(),
            attempt: 0,
        }),
        hostname: format!("cri-bench-{name}"),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod_id = timed!(
        0,
        rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
    )
    .pod_sandbox_id;
    *pod = Some(pod_id.clone());

    let container_config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "bench".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: args.image.clone(),
            ..Default::default()
        }),
        command: args.command.clone(),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let container_id = timed!(
        1,
        rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config),
            sandbox_config: Some(pod_config),
        })
    )
    .container_id;
    timed!(
        2,
        rt.start_container(cri::StartContainerRequest {
            container_id: container_id.clone(),
        })
    );
    let status = timed!(
        3,
        rt.container_status(cri::ContainerStatusRequest {
            container_id: container_id.clone(),
            verbose: false,
        })
    );
    let state = status.status.map(|s| s.state);
    if state != Some(cri::ContainerState::ContainerRunning as i32) {
        return Err(format!(
            "container {container_id} (pod {name}) is not running: state {state:?}"
        )
        .into());
    }
    timed!(
        4,
        rt.stop_container(cri::StopContainerRequest {
            container_id: container_id.clone(),
            timeout: args.stop_timeout,
        })
    );
    timed!(
        5,
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: container_id.clone(),
        })
    );
    timed!(
        6,
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
    );
    timed!(
        7,
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
    );
    Ok(times)
}

/// Median and p90 of `samples` in milliseconds, computed as `bench-summary.py` does.
fn median_p90(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let n = ms.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let p90 = ms[(n * 9 / 10).max(1) - 1];
    (median, p90)
}
