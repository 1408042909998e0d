//! Errors of the controller and how they map to HTTP answers.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wharf_api::ApiError;
use wharf_store::StoreError;

/// A failed API call: an HTTP status, a message and an optional hint.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ServerError {
    pub status: StatusCode,
    pub message: String,
    pub hint: Option<String>,
}

impl ServerError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            hint: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn body(&self) -> ApiError {
        ApiError {
            error: self.message.clone(),
            hint: self.hint.clone(),
        }
    }
}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::VersionConflict { version, .. } => {
                ServerError::new(StatusCode::CONFLICT, e.to_string()).hint(format!(
                    "build under a new version name; `{version}` stays what it is"
                ))
            }
            StoreError::Locked { .. } => ServerError::new(StatusCode::CONFLICT, e.to_string())
                .hint("wait for it to finish (`wharf deploy --wait-lock` queues behind it); `wharf history` shows its outcome"),
            StoreError::Transition { id, .. } => {
                ServerError::new(StatusCode::CONFLICT, e.to_string()).hint(format!(
                    "`wharf deployments show {id}` shows what happened to it"
                ))
            }
            StoreError::Superseded { id, .. } => ServerError::new(
                StatusCode::CONFLICT,
                e.to_string(),
            )
            .hint(format!(
                "reject it (`wharf reject {id}`) and make the change again on the current values"
            )),
            StoreError::NoDeployment(_) => ServerError::not_found(e.to_string())
                .hint("`wharf deployments --pending` lists what waits for approval"),
            StoreError::Fenced { .. } => ServerError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                .hint("retry: the CLI finds the new leader among the addresses in --controller"),
            StoreError::Unavailable(_) => ServerError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                .hint("nothing was changed; retry once the database answers"),
            _ => ServerError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
