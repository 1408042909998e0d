//! A small endpoint answered in code rather than by a backend: the agent's
//! configuration gateway on a joined host, which passes runtime configuration reads to
//! the controller over the agent's own connection. Served by the same bounded server as
//! service addresses (connection limit, header deadline, drain on stop).

use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What an answered request carries that its answer may depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
}

/// An answer: status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Serves `listener` until `shutdown`, answering each request with `answer`.
pub async fn serve_answers<F, Fut>(listener: TcpListener, shutdown: CancellationToken, answer: F)
where
    F: Fn(Asked) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    crate::http::serve_requests(listener, shutdown, None, move |request, _peer| {
        let answer = answer.clone();
        async move {
            let asked = Asked {
                method: request.method().as_str().to_owned(),
                path: request.uri().path().to_owned(),
                query: request.uri().query().unwrap_or_default().to_owned(),
                authorization: request
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            };
            into_response(answer(asked).await)
        }
    })
    .await
}

fn into_response(answer: Answer) -> Response<crate::http::ProxyBody> {
    let body = Full::new(Bytes::from(answer.body))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_keeps_its_status_and_headers_and_drops_what_is_not_a_header() {
        let response = into_response(Answer {
            status: 401,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("bad header".into(), "x".into()),
            ],
            body: b"{}".to_vec(),
        });
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers().len(), 1);
    }
}
