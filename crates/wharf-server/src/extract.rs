//! axum's `Json`, `Query` and `Path`, refusing bad input with the API's own error body
//! (`{"error": ..., "hint": ...}`) instead of axum's plain text, so that every answer of
//! the API is what its OpenAPI document says.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ServerError;

const DESCRIBED: &str = "`GET /v1/openapi.json` describes every request";

/// A JSON body in, or a JSON answer out.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ServerError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(e) => Err(refused(&e)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn refused(e: &JsonRejection) -> ServerError {
    ServerError::new(e.status(), e.body_text()).hint(DESCRIBED)
}

/// A raw body (an artifact, a secret's value).
pub struct Bytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Bytes {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ServerError> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Bytes)
            .map_err(|e: BytesRejection| ServerError::new(e.status(), e.body_text()))
    }
}

/// The query string's parameters.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServerError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|e: QueryRejection| {
                ServerError::new(e.status(), e.body_text()).hint(DESCRIBED)
            })
    }
}

/// The path's parameters.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServerError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|e: PathRejection| ServerError::new(e.status(), e.body_text()).hint(DESCRIBED))
    }
}
