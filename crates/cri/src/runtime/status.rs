//! What the CRI shows of husk's records: pod and container statuses, list items, and the container events of
//! kubelet's evented PLEG.

use std::collections::HashMap;

use husk_core::{ContainerRecord, SandboxRecord, Timestamp};
use husk_cri_api::v1 as cri;
use tonic::Status;

use super::Runtime;
use super::requests::{cri_resources, mount_status, user_namespace_status};
use crate::convert;

impl Runtime {
    pub(super) fn pod_status(&self, sb: &SandboxRecord) -> cri::PodSandboxStatus {
        let ip = convert::pod_ip(sb);
        cri::PodSandboxStatus {
            id: sb.config.id.clone(),
            metadata: Some(convert::pod_metadata(sb)),
            state: convert::pod_state(sb) as i32,
            created_at: sb.created_at.unix_nanos(),
            network: Some(cri::PodSandboxNetworkStatus {
                ip,
                additional_ips: Vec::new(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network: if sb.config.network.mode() == "host" {
                            cri::NamespaceMode::Node as i32
                        } else {
                            cri::NamespaceMode::Pod as i32
                        },
                        pid: if sb.config.host_pid {
                            cri::NamespaceMode::Node as i32
                        } else if sb.config.share_pid {
                            cri::NamespaceMode::Pod as i32
                        } else {
                            cri::NamespaceMode::Container as i32
                        },
                        ipc: if sb.config.host_ipc {
                            cri::NamespaceMode::Node as i32
                        } else {
                            cri::NamespaceMode::Pod as i32
                        },
                        userns_options: Some(user_namespace_status(sb)),
                        ..Default::default()
                    }),
                }),
            }),
            labels: convert::visible(&sb.config.labels),
            annotations: convert::visible(&sb.config.annotations),
            runtime_handler: convert::pod_handler(sb),
        }
    }

    pub(super) fn container_status(&self, rec: &ContainerRecord) -> cri::ContainerStatus {
        let exit = rec.exit.clone().unwrap_or_default();
        let exited = convert::container_state(rec.status) == cri::ContainerState::ContainerExited;
        cri::ContainerStatus {
            id: rec.config.id.clone(),
            metadata: Some(convert::container_metadata(rec)),
            state: convert::container_state(rec.status) as i32,
            created_at: rec.created_at.unix_nanos(),
            started_at: rec.started_at.map_or(0, Timestamp::unix_nanos),
            finished_at: if exited {
                exit.finished_at.map_or(0, Timestamp::unix_nanos)
            } else {
                0
            },
            exit_code: if exited { exit.code } else { 0 },
            image: Some(cri::ImageSpec {
                image: rec.config.image.name.clone(),
                ..Default::default()
            }),
            image_ref: rec.config.image.id.clone(),
            image_id: rec.config.image.id.clone(),
            reason: convert::exit_reason(rec),
            message: if exited {
                exit.reason.clone()
            } else {
                rec.error.clone()
            },
            labels: convert::visible(&rec.config.labels),
            annotations: convert::visible(&rec.annotations),
            log_path: rec.config.cri_log_path.clone().unwrap_or_default(),
            mounts: rec.config.mounts.iter().filter_map(mount_status).collect(),
            // The identity the container's first process started with, where the driver resolved it.
            resources: Some(cri::ContainerResources {
                linux: Some(cri_resources(&rec.config.resources)),
                windows: None,
            }),
            // The signal StopContainer sends: the one asked for, the image's, else SIGTERM (15).
            stop_signal: convert::cri_signal(rec.config.stop_signal.unwrap_or(15)) as i32,
            user: rec.runtime.user.as_ref().map(|u| cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: u.uid.into(),
                    gid: u.gid.into(),
                    supplemental_groups: u.groups.iter().map(|&g| g.into()).collect(),
                }),
            }),
        }
    }

    /// The CRI pods `filter` matches (ListPodSandbox, StreamPodSandboxes).
    pub(super) fn pods_matching(
        &self,
        filter: cri::PodSandboxFilter,
    ) -> Result<Vec<cri::PodSandbox>, Status> {
        let items = self
            .cri_pods()?
            .into_iter()
            .filter(|sb| filter.id.is_empty() || sb.config.id == filter.id)
            .filter(|sb| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| convert::pod_state(sb) as i32 == s.state)
            })
            .filter(|sb| convert::matches(&sb.config.labels, &filter.label_selector))
            .map(|sb| cri::PodSandbox {
                id: sb.config.id.clone(),
                metadata: Some(convert::pod_metadata(&sb)),
                state: convert::pod_state(&sb) as i32,
                created_at: sb.created_at.unix_nanos(),
                labels: convert::visible(&sb.config.labels),
                annotations: convert::visible(&sb.config.annotations),
                runtime_handler: convert::pod_handler(&sb),
            })
            .collect();
        Ok(items)
    }

    /// The CRI containers `filter` matches (ListContainers, StreamContainers).
    pub(super) fn containers_matching(
        &self,
        filter: cri::ContainerFilter,
    ) -> Result<Vec<cri::Container>, Status> {
        let containers = self
            .cri_containers()?
            .into_iter()
            .filter(|c| filter.id.is_empty() || c.config.id == filter.id)
            .filter(|c| {
                filter.pod_sandbox_id.is_empty()
                    || c.sandbox_id.as_deref() == Some(filter.pod_sandbox_id.as_str())
            })
            .filter(|c| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| convert::container_state(c.status) as i32 == s.state)
            })
            .filter(|c| convert::matches(&c.config.labels, &filter.label_selector))
            .map(|c| self.container_summary(&c))
            .collect();
        Ok(containers)
    }

    /// A container's life event as kubelet's evented PLEG reads it: the container, its pod's status and the
    /// statuses of the pod's containers. `pods` maps CRI containers to their pods (kept up to date here).
    pub(super) fn container_event(
        &self,
        event: &husk_engine::Event,
        pods: &mut HashMap<String, String>,
    ) -> Option<cri::ContainerEventResponse> {
        use husk_engine::EventKind;
        let kind = match event.kind {
            EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
            EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
            EventKind::Exited(_) => cri::ContainerEventType::ContainerStoppedEvent,
            EventKind::Removed => cri::ContainerEventType::ContainerDeletedEvent,
            _ => return None,
        };
        let pod = match self.engine.container(&event.id) {
            Ok(rec) if convert::is_cri_container(&rec) => {
                let pod = rec.sandbox_id.clone()?;
                pods.insert(rec.config.id.clone(), pod.clone());
                pod
            }
            Ok(_) => return None,
            Err(_) => pods.get(&event.id)?.clone(),
        };
        if kind == cri::ContainerEventType::ContainerDeletedEvent {
            pods.remove(&event.id);
        }
        let sandbox = self.pod(&pod).ok();
        let containers_statuses = self
            .pod_containers(&pod)
            .unwrap_or_default()
            .iter()
            .map(|c| self.container_status(c))
            .collect();
        Some(cri::ContainerEventResponse {
            container_id: event.id.clone(),
            container_event_type: kind as i32,
            created_at: event.time_nano,
            pod_sandbox_status: sandbox.map(|sb| self.pod_status(&sb)),
            containers_statuses,
        })
    }

    pub(super) fn container_summary(&self, rec: &ContainerRecord) -> cri::Container {
        cri::Container {
            id: rec.config.id.clone(),
            pod_sandbox_id: rec.sandbox_id.clone().unwrap_or_default(),
            metadata: Some(convert::container_metadata(rec)),
            image: Some(cri::ImageSpec {
                image: rec.config.image.name.clone(),
                ..Default::default()
            }),
            image_ref: rec.config.image.id.clone(),
            image_id: rec.config.image.id.clone(),
            state: convert::container_state(rec.status) as i32,
            created_at: rec.created_at.unix_nanos(),
            labels: convert::visible(&rec.config.labels),
            annotations: convert::visible(&rec.annotations),
        }
    }
}
