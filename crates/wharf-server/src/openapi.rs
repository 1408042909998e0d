//! The API's OpenAPI 3.1 document. The routes make it (`routes::described`): each
//! handler carries its `#[utoipa::path]`, so a route cannot exist without its
//! description. This module adds what holds for every operation: how callers
//! authenticate and the error body of every refusal.

use axum::http::{Method, StatusCode, Uri};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use crate::error::ServerError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wharf controller",
        description = "The controller's HTTP API, which the `wharf` CLI uses. Errors are JSON \
            `{\"error\", \"hint\"}` with a 4xx status. Long operations answer with one JSON \
            event per line (`application/x-ndjson`), the last being `finished` or `error`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(wharf_api::ApiError)),
    tags(
        (name = "controller", description = "Liveness, identity and the CA"),
        (name = "artifacts", description = "Immutable builds"),
        (name = "deployments", description = "Deploys, rollbacks, approvals and the pipeline"),
        (name = "instances", description = "What runs, its logs and traffic"),
        (name = "fleet", description = "Hosts and their join tokens"),
        (name = "config", description = "Configuration overrides and what instances read"),
        (name = "secrets", description = "Sealed secrets; values never leave"),
        (name = "rollouts", description = "Blue-green and canary rollouts"),
        (name = "access", description = "API tokens and the audit log"),
        (name = "definitions", description = "Revisions of wharf.yaml"),
        (name = "ssh", description = "Machines of SSH environments"),
        (name = "dashboard", description = "Signing a browser in"),
    )
)]
struct Base;

/// The document's fixed part, before the routes add their operations.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// What applies to every operation, once the routes have added theirs.
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token (`wharf token issue`), on a controller started with `--auth`.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "local_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            crate::LOCAL_KEY_HEADER,
            "On an open controller: the key in `controller.json` of its owner-only state \
             folder, which only the user who started it can read.",
        ))),
    );
    components.add_security_scheme(
        "config_token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An instance's `WHARF_CONFIG_TOKEN`."))
                .build(),
        ),
    );
    doc.security = Some(vec![
        SecurityRequirement::new("token", Vec::<String>::new()),
        SecurityRequirement::new("local_key", Vec::<String>::new()),
    ]);
    let refusal = ResponseBuilder::new()
        .description(
            "Refused: bad input (400, 413, 415, 422), no or a wrong credential (401), no \
             grant (403), unknown (404), a conflict (409), too many requests (429).",
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ApiError")))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .insert("4XX".into(), RefOr::T(refusal.clone()));
        }
    }
}

/// A path the API does not have: the API's error body, not an empty page.
pub async fn no_such_path(uri: Uri) -> ServerError {
    ServerError::not_found(format!("no such path: `{}`", uri.path()))
        .hint("`GET /v1/openapi.json` describes every path of the API")
}

/// A method a path does not take.
pub async fn no_such_method(method: Method, uri: Uri) -> ServerError {
    ServerError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("`{}` does not take {method}", uri.path()),
    )
    .hint("`GET /v1/openapi.json` describes every path of the API")
}

#[cfg(test)]
mod tests {
    const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

    #[test]
    fn the_checked_in_document_is_the_api_as_built() {
        let built = crate::openapi_json() + "\n";
        if std::env::var_os("WHARF_UPDATE_OPENAPI").is_some() {
            std::fs::write(CHECKED_IN, &built).expect("write docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
        assert!(
            checked_in == built,
            "docs/openapi.json differs from the API as built: run \
             `WHARF_UPDATE_OPENAPI=1 cargo test -p wharf-server openapi` and commit it"
        );
    }

    #[test]
    fn every_operation_has_its_own_id_and_says_how_it_refuses() {
        let document: serde_json::Value =
            serde_json::from_str(&crate::openapi_json()).expect("the document is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().expect("paths");
        assert!(paths.len() > 40, "only {} paths", paths.len());
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("a path item") {
                let id = operation["operationId"].as_str().unwrap_or_default();
                assert!(ids.insert(id.to_owned()), "{method} {path}: `{id}` twice");
                let refusal = &operation["responses"]["4XX"]["content"]["application/json"];
                assert_eq!(
                    refusal["schema"]["$ref"], "#/components/schemas/ApiError",
                    "{method} {path}"
                );
            }
        }
    }
}
