//! The OpenAPI 3 document of Zun's API as husk serves it, generated from the handlers' own annotations and
//! the request and response types (utoipa), so it cannot drift from the code.

use axum::Json;
use utoipa::OpenApi;

use super::containers::{archive, commit, crud, io, lifecycle};
use super::{actions, capsules, containers, create, error, hosts, images, quotas, view};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "husk: OpenStack Zun container API v1",
        description = "Zun's container API as husk serves it. Send `OpenStack-API-Version: container X.Y` \
                       (1.1 to 1.40, or `latest`; absent means 1.1) and, with Keystone authentication, \
                       `X-Auth-Token` from `POST /identity/v3/auth/tokens`. Action parameters travel in the \
                       query string; booleans may be written Python's way (`True`, `False`).",
        version = "1.40"
    ),
    paths(
        crud::list, crud::create, crud::show, crud::update, crud::delete,
        lifecycle::start, lifecycle::stop, lifecycle::reboot, lifecycle::pause, lifecycle::unpause,
        lifecycle::kill, crud::rename, io::logs, io::execute, io::top,
        io::stats, crud::network_list, io::attach, io::resize,
        io::execute_resize, commit::commit, archive::get_archive, archive::put_archive,
        capsules::create, capsules::list, capsules::show, capsules::delete,
        actions::list, actions::show,
        quotas::show, quotas::defaults, quotas::update, quotas::reset, quotas::show_class, quotas::update_class,
        hosts::list_hosts, hosts::show_host, hosts::list_services, hosts::enable, hosts::disable,
        hosts::force_down, hosts::delete_service, hosts::zones,
        images::list, images::show, images::pull, images::delete,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorEntry,
        create::CreateBody, create::RestartPolicyBody, create::NetBody, create::MountBody,
        containers::UpdateBody, containers::ContainerList, containers::ExecResult, containers::TopResult, containers::CommitResult, containers::ArchiveBody,
        view::ZunContainer, view::Link, view::Address, view::ZunRestartPolicy,
        capsules::CapsuleBody, capsules::ZunCapsule, capsules::CapsuleList,
        actions::ActionList, quotas::QuotaBody, hosts::ZunHost, hosts::ServiceBody,
        images::ZunImage, images::PullBody,
    )),
    tags(
        (name = "containers", description = "Containers and their actions"),
        (name = "capsules", description = "A sandbox with its containers"),
        (name = "container actions", description = "What was done to a container"),
        (name = "quotas", description = "Per-project limits"),
        (name = "hosts and services", description = "This host as Zun's compute node"),
        (name = "images", description = "Images on this host"),
    )
)]
pub struct ZunApiDoc;

/// `GET /v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ZunApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_schema() {
        let doc = ZunApiDoc::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        let paths = json["paths"].as_object().unwrap();
        for p in [
            "/v1/containers",
            "/v1/containers/{id}",
            "/v1/containers/{id}/execute",
            "/v1/capsules",
            "/v1/quotas/{project_id}",
            "/v1/hosts",
            "/v1/images/{id}",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        let create = &json["paths"]["/v1/containers"]["post"];
        assert!(create["requestBody"].is_object());
        // The common errors (`ZunErrors`) are on every route, with Zun's error body.
        let conflict = &json["paths"]["/v1/containers/{id}/start"]["post"]["responses"]["409"];
        assert_eq!(conflict["description"], "Invalid state");
        assert_eq!(
            conflict["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        let schema = &json["components"]["schemas"]["CreateBody"];
        assert_eq!(schema["required"][0], "image");
        assert_eq!(json["openapi"].as_str().unwrap().chars().next(), Some('3'));
    }
}
