//! The CRI ImageService over the engine's image store.

use husk_api_types::system::LayerUsage;
use husk_api_types::{ImageView, ProgressSink, Removed};
use husk_core::ErrorKind;
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::image_service_server::ImageService;
use husk_engine::Engine;
use tonic::{Request, Response, Status};

use crate::status_of;

/// The ImageService.
#[derive(Debug, Clone)]
pub struct Images {
    engine: Engine,
}

impl Images {
    /// An ImageService over `engine`.
    pub fn new(engine: Engine) -> Images {
        Images { engine }
    }

    /// The images `filter` matches (ListImages, StreamImages): the one it names, or all.
    fn images_matching(&self, filter: Option<cri::ImageFilter>) -> Result<Vec<cri::Image>, Status> {
        let filter = filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        Ok(match filter {
            Some(r) => match self.engine.inspect_image(&r) {
                Ok(i) => vec![cri_image(&i)],
                Err(e) if e.kind == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(status_of(&e)),
            },
            None => self
                .engine
                .list_images()
                .map_err(|e| status_of(&e))?
                .iter()
                .map(cri_image)
                .collect(),
        })
    }
}

/// The image a request names, or InvalidArgument.
fn reference(spec: Option<&cri::ImageSpec>) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(r) if !r.is_empty() => Ok(r.to_string()),
        _ => Err(Status::invalid_argument("image.image is required")),
    }
}

/// An image as the CRI shows it: the user of its config as `uid` when numeric, `username` otherwise.
pub fn cri_image(i: &ImageView) -> cri::Image {
    let user = i.config.user.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
        Err(_) if user.is_empty() => (None, String::new()),
        Err(_) => (None, user.to_string()),
    };
    cri::Image {
        id: i.id.clone(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let images = self.images_matching(request.into_inner().filter)?;
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    type StreamImagesStream = crate::runtime::Pages<cri::StreamImagesResponse>;

    async fn stream_images(
        &self,
        request: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let images = self.images_matching(request.into_inner().filter)?;
        Ok(crate::runtime::pages(images, |images| {
            cri::StreamImagesResponse { images }
        }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let r = reference(req.image.as_ref())?;
        let image = match self.engine.inspect_image(&r) {
            Ok(i) => Some(i),
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => return Err(status_of(&e)),
        };
        let mut info = std::collections::HashMap::new();
        if req.verbose
            && let Some(i) = &image
        {
            info.insert(
                "info".to_string(),
                serde_json::json!({"config": i.config, "layers": i.layers.len(), "loaded_at": i.loaded_at})
                    .to_string(),
            );
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: image.as_ref().map(cri_image),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = request.into_inner();
        let r = reference(req.image.as_ref())?;
        let credentials = req.auth.as_ref().map(credentials_of).transpose()?.flatten();
        let pulled = self
            .engine
            .pull_image_as(&r, credentials, ProgressSink::default())
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: pulled.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let r = reference(request.into_inner().image.as_ref())?;
        // The CRI removes the image, with every name it has: by its ID.
        let id = match self.engine.inspect_image(&r) {
            Ok(i) => i.id,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Ok(Response::new(cri::RemoveImageResponse {}));
            }
            Err(e) => return Err(status_of(&e)),
        };
        match self.engine.remove_image(&id, true) {
            Ok(steps) => {
                tracing::debug!(
                    removed = steps
                        .iter()
                        .filter(|s| matches!(s, Removed::Deleted(_)))
                        .count(),
                    "CRI image removal"
                );
            }
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(status_of(&e)),
        }
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let info = self.engine.info().await.map_err(|e| status_of(&e))?;
        let images = self
            .engine
            .image_store_usage()
            .await
            .map_err(|e| status_of(&e))?;
        // The containers' writable layers, where their driver keeps them on this host's disk.
        let mut layers = LayerUsage::default();
        for rec in self
            .engine
            .list_containers(true)
            .map_err(|e| status_of(&e))?
        {
            if let Some(u) = self.engine.writable_layer_usage(&rec).await {
                layers.bytes += u.bytes;
                layers.inodes += u.inodes;
            }
        }
        let now = husk_core::Timestamp::now().unix_nanos();
        let usage = |mountpoint: String, used: LayerUsage| cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier { mountpoint }),
            used_bytes: Some(cri::UInt64Value { value: used.bytes }),
            inodes_used: Some(cri::UInt64Value { value: used.inodes }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage(format!("{}/images", info.root), images)],
            container_filesystems: vec![usage(info.root.clone(), layers)],
        }))
    }
}

/// The user name and password of a PullImage's `auth`: given apart, or as `auth` (base64 of `user:password`,
/// as in Docker's config file). `None` when it names no user (the stored credentials are used).
fn credentials_of(auth: &cri::AuthConfig) -> Result<Option<(String, String)>, Status> {
    if !auth.identity_token.is_empty() || !auth.registry_token.is_empty() {
        return Err(Status::unimplemented(
            "auth.identity_token and auth.registry_token: husk pulls with a user name and password only",
        ));
    }
    if !auth.username.is_empty() {
        return Ok(Some((auth.username.clone(), auth.password.clone())));
    }
    if auth.auth.is_empty() {
        return Ok(None);
    }
    use base64::Engine as _;
    let bad = || Status::invalid_argument("auth.auth is not base64 of user:password");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.auth.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some((user.to_string(), password.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_credentials_come_apart_or_encoded() {
        let apart = cri::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        assert_eq!(
            credentials_of(&apart).unwrap(),
            Some(("u".into(), "p".into()))
        );
        let encoded = cri::AuthConfig {
            auth: "dTpwOnE=".into(), // u:p:q
            ..Default::default()
        };
        assert_eq!(
            credentials_of(&encoded).unwrap(),
            Some(("u".into(), "p:q".into()))
        );
        assert_eq!(credentials_of(&cri::AuthConfig::default()).unwrap(), None);
        let garbage = cri::AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert_eq!(
            credentials_of(&garbage).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let token = cri::AuthConfig {
            registry_token: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            credentials_of(&token).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
    }

    fn image(user: &str) -> ImageView {
        serde_json::from_value(serde_json::json!({
            "Id": "sha256:abc", "RepoTags": ["r/x:1"], "Size": 7, "Config": {"User": user}
        }))
        .unwrap()
    }

    #[test]
    fn users_become_uid_or_username() {
        let i = cri_image(&image("1002:1004"));
        assert_eq!(i.uid, Some(cri::Int64Value { value: 1002 }));
        assert_eq!(i.username, "");
        let i = cri_image(&image("www-data"));
        assert_eq!((i.uid, i.username.as_str()), (None, "www-data"));
        let i = cri_image(&image(""));
        assert_eq!((i.uid, i.username.as_str()), (None, ""));
        assert_eq!(i.repo_tags, ["r/x:1"]);
        assert_eq!(i.size, 7);
    }
}
