//! The gate in front of the RPC server: the bearer token, the body limit, and
//! the JSON-RPC 2.0 rules a library default gets wrong.
//!
//! Every HTTP request and WebSocket handshake without `Authorization: Bearer
//! <token>` is answered 401 before any method runs; the token is compared in
//! constant time and never logged. A POST body is read up to the size limit
//! (a larger one is refused without being buffered), then:
//! - well-formed JSON that is not a Request object gets -32600 (the
//!   specification's "Invalid Request"; jsonrpsee would say -32700);
//! - a notification, or a batch of notifications only, gets no body at all
//!   (204), as the specification requires;
//! - everything else goes to jsonrpsee unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

/// The gate as a tower layer, for `Server::builder().set_http_middleware`.
#[derive(Clone)]
pub struct BearerAuthLayer {
    expected: Arc<[u8]>,
    max_body: usize,
    body_timeout: std::time::Duration,
}

impl BearerAuthLayer {
    /// Accepts requests that carry `token`, with bodies of at most `max_body` bytes.
    pub fn new(token: &str, max_body: usize) -> Self {
        Self {
            expected: format!("Bearer {token}").into_bytes().into(),
            max_body,
            body_timeout: std::time::Duration::from_secs(10),
        }
    }

    /// How long a client may take to send a request body (default 10 s).
    pub fn with_body_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.body_timeout = timeout;
        self
    }
}

impl std::fmt::Debug for BearerAuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuthLayer(<token>)")
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            expected: self.expected.clone(),
            max_body: self.max_body,
            body_timeout: self.body_timeout,
        }
    }
}

/// The service [`BearerAuthLayer`] puts in front of the RPC server.
#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    expected: Arc<[u8]>,
    max_body: usize,
    body_timeout: std::time::Duration,
}

fn respond(status: http::StatusCode, body: &'static str) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    if !body.is_empty() {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    response
}

fn unauthorized() -> HttpResponse {
    let mut response = respond(
        http::StatusCode::UNAUTHORIZED,
        r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"missing or wrong token: send Authorization: Bearer <Token> from conf.toml"},"id":null}"#,
    );
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

fn invalid_request(id: Value) -> HttpResponse {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "error": {"code": -32600, "message": "Invalid Request: not a JSON-RPC 2.0 request object"},
        "id": id,
    });
    let mut response = HttpResponse::new(HttpBody::from(body.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// What to do with a POST body.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Let jsonrpsee answer it as it is (calls, and bodies that are not JSON).
    Pass,
    /// Answer -32600 with this id.
    Invalid(Value),
    /// It holds notifications, which jsonrpsee would not run: send this
    /// body instead, where each has a private id, and drop their answers.
    Notifications(Vec<u8>),
}

/// Ids given to notifications so that they run; never a client's own.
const NOTIFICATION_ID: &str = "\u{1}zist-notification-";

fn is_valid_id(id: &Value) -> bool {
    matches!(id, Value::Null | Value::String(_) | Value::Number(_))
}

/// `Some(is_notification)` for a valid Request object, `None` otherwise.
fn request_shape(value: &Value) -> Option<bool> {
    let object = value.as_object()?;
    let valid = object.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
        && object.get("method").is_some_and(Value::is_string)
        && object
            .get("params")
            .is_none_or(|p| p.is_array() || p.is_object())
        && object.get("id").is_none_or(is_valid_id);
    valid.then(|| !object.contains_key("id"))
}

/// Gives every valid notification among `items` a private id; true if any.
fn number_notifications<'a>(items: impl Iterator<Item = &'a mut Value>) -> bool {
    let mut any = false;
    for (n, item) in items.enumerate() {
        if request_shape(item) == Some(true)
            && let Some(object) = item.as_object_mut()
        {
            object.insert(
                "id".to_owned(),
                Value::String(format!("{NOTIFICATION_ID}{n}")),
            );
            any = true;
        }
    }
    any
}

fn judge(body: &[u8]) -> Verdict {
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Pass; // jsonrpsee answers -32700
    };
    let rewritten = match &mut value {
        Value::Array(items) if items.is_empty() => return Verdict::Invalid(Value::Null),
        Value::Array(items) => number_notifications(items.iter_mut()),
        Value::Object(object) => match request_shape(&Value::Object(object.clone())) {
            None => {
                let id = object.get("id").filter(|id| is_valid_id(id)).cloned();
                return Verdict::Invalid(id.unwrap_or(Value::Null));
            }
            Some(false) => false,
            Some(true) => number_notifications(std::iter::once(&mut value)),
        },
        _ => return Verdict::Invalid(Value::Null),
    };
    if rewritten {
        Verdict::Notifications(value.to_string().into_bytes())
    } else {
        Verdict::Pass
    }
}

/// The answers to a rewritten body, without those to notifications; `None`
/// when nothing is left to send.
fn without_notification_answers(body: &[u8]) -> Option<Vec<u8>> {
    let is_ours = |answer: &Value| {
        answer
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| id.starts_with(NOTIFICATION_ID))
    };
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Array(answers) => {
            let kept: Vec<Value> = answers.into_iter().filter(|a| !is_ours(a)).collect();
            (!kept.is_empty()).then(|| Value::Array(kept).to_string().into_bytes())
        }
        answer if is_ours(&answer) => None,
        answer => Some(answer.to_string().into_bytes()),
    }
}

impl<S, B> Service<HttpRequest<B>> for BearerAuth<S>
where
    S: Service<HttpRequest<HttpBody>, Response = HttpResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: HttpRequest<B>) -> Self::Future {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // ct_eq is constant-time for slices of equal length; a wrong length
        // only tells the length of "Bearer <token>", not its content.
        if !bool::from(given.ct_eq(&self.expected)) {
            return Box::pin(async { Ok(unauthorized()) });
        }
        // The ready service goes into the future; a fresh clone stays here.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if request.method() != http::Method::POST {
            // WebSocket handshakes and the rest: jsonrpsee decides.
            let fut = inner.call(request.map(HttpBody::new));
            return Box::pin(async move { fut.await.map_err(Into::into) });
        }
        let max_body = self.max_body;
        let body_timeout = self.body_timeout;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let collected = tokio::time::timeout(
                body_timeout,
                http_body_util::Limited::new(body, max_body).collect(),
            )
            .await;
            let bytes = match collected {
                Ok(Ok(collected)) => collected.to_bytes(),
                Err(_) => {
                    return Ok(respond(
                        http::StatusCode::REQUEST_TIMEOUT,
                        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"the request body came too slowly"},"id":null}"#,
                    ));
                }
                Ok(Err(_)) => {
                    return Ok(respond(
                        http::StatusCode::PAYLOAD_TOO_LARGE,
                        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"request too large"},"id":null}"#,
                    ));
                }
            };
            let body = match judge(&bytes) {
                Verdict::Invalid(id) => return Ok(invalid_request(id)),
                Verdict::Pass => {
                    let request = HttpRequest::from_parts(parts, HttpBody::from(bytes.to_vec()));
                    return inner.call(request).await.map_err(Into::into);
                }
                Verdict::Notifications(body) => body,
            };
            let request = HttpRequest::from_parts(parts, HttpBody::from(body));
            let response = inner.call(request).await.map_err(Into::into)?;
            let (mut parts, body) = response.into_parts();
            let answers = body.collect().await?.to_bytes();
            match without_notification_answers(&answers) {
                None => Ok(respond(http::StatusCode::NO_CONTENT, "")),
                Some(kept) => {
                    parts.headers.remove(http::header::CONTENT_LENGTH);
                    Ok(HttpResponse::from_parts(parts, HttpBody::from(kept)))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_judged_by_the_specification() {
        let judge = |s: &str| judge(s.as_bytes());
        let rewritten = |s: &str| match judge(s) {
            Verdict::Notifications(body) => serde_json::from_slice::<Value>(&body).unwrap(),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            judge(r#"{"jsonrpc":"2.0","method":"a","id":1}"#),
            Verdict::Pass
        );
        let one = rewritten(r#"{"jsonrpc":"2.0","method":"a"}"#);
        assert!(one["id"].as_str().unwrap().starts_with(NOTIFICATION_ID));
        let mixed =
            rewritten(r#"[{"jsonrpc":"2.0","method":"a","id":7},{"jsonrpc":"2.0","method":"b"}]"#);
        assert_eq!(mixed[0]["id"], 7);
        assert!(
            mixed[1]["id"]
                .as_str()
                .unwrap()
                .starts_with(NOTIFICATION_ID)
        );
        assert_eq!(judge(r#"{"foo":1}"#), Verdict::Invalid(Value::Null));
        assert_eq!(
            judge(r#"{"jsonrpc":"2.0","method":1,"id":"x"}"#),
            Verdict::Invalid("x".into())
        );
        assert_eq!(
            judge(r#"{"jsonrpc":"2.0","method":"a","id":{}}"#),
            Verdict::Invalid(Value::Null)
        );
        assert_eq!(
            judge(r#"{"jsonrpc":"2.0","method":"a","params":3,"id":2}"#),
            Verdict::Invalid(2.into())
        );
        assert_eq!(judge("42"), Verdict::Invalid(Value::Null));
        assert_eq!(judge("[]"), Verdict::Invalid(Value::Null));
        assert_eq!(
            judge(r#"[{"jsonrpc":"2.0","method":"a","id":1},{"x":1}]"#),
            Verdict::Pass
        );
        assert_eq!(judge(r#"{"jsonrpc":"2.0","#), Verdict::Pass);
    }

    #[test]
    fn answers_to_notifications_are_dropped() {
        let ours = format!("{NOTIFICATION_ID}1");
        let single = serde_json::json!({"jsonrpc":"2.0","result":true,"id":ours}).to_string();
        assert_eq!(without_notification_answers(single.as_bytes()), None);
        let batch = serde_json::json!([{"jsonrpc":"2.0","result":1,"id":7},{"jsonrpc":"2.0","result":2,"id":ours}]).to_string();
        let kept: Value =
            serde_json::from_slice(&without_notification_answers(batch.as_bytes()).unwrap())
                .unwrap();
        assert_eq!(
            kept,
            serde_json::json!([{"jsonrpc":"2.0","result":1,"id":7}])
        );
    }
}
