//! The gate in front of the RPC server: the bearer token, the body limit, and
//! the JSON-RPC 2.0 rules a library default gets wrong.
//!
//! Every HTTP request and WebSocket handshake without `Authorization: Bearer
//! <token>` (the scheme in any case) is answered 401 before any method
//! runs; the token is compared in constant time and never logged. A POST
//! body is read up to the size limit (a larger one is refused without being
//! buffered), then:
//! - a body that is not JSON (invalid UTF-8 included) gets -32700, always
//!   with HTTP 200 like every other JSON-RPC error;
//! - well-formed JSON that is not a Request object gets -32600 (the
//!   specification's "Invalid Request"; jsonrpsee would say -32700);
//! - a notification, or a batch of notifications only, gets no body at all
//!   (204), as the specification requires;
//! - a request whose id is a number jsonrpsee cannot carry (`1.5`, `1.0`,
//!   `1e3`) runs, and its answer echoes the id as sent;
//! - everything else goes to jsonrpsee unchanged.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use serde_json::Value;
use tower::{Layer, Service};
use zist_core::{Access, BrowserGuard, Caller};

/// The gate as a tower layer, for `Server::builder().set_http_middleware`.
/// It puts the [`Caller`] a token names in the request's extensions, where
/// [`ScopeLayer`] finds it for each call.
#[derive(Clone)]
pub struct BearerAuthLayer {
    access: Access,
    guard: BrowserGuard,
    max_body: usize,
    body_timeout: std::time::Duration,
}

impl BearerAuthLayer {
    /// Accepts requests that carry a token of `access` (or the one token a
    /// `&str` is), with bodies of at most `max_body` bytes.
    pub fn new(access: impl Into<Access>, max_body: usize) -> Self {
        Self {
            access: access.into(),
            guard: BrowserGuard::default(),
            max_body,
            body_timeout: std::time::Duration::from_secs(10),
        }
    }

    /// Host names served besides IP addresses and `localhost` (`AllowedHosts`).
    pub fn with_allowed_hosts(mut self, hosts: &[String]) -> Self {
        self.guard = BrowserGuard::new(hosts);
        self
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
            access: self.access.clone(),
            guard: self.guard.clone(),
            max_body: self.max_body,
            body_timeout: self.body_timeout,
        }
    }
}

/// The service [`BearerAuthLayer`] puts in front of the RPC server.
#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    access: Access,
    guard: BrowserGuard,
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

fn forbidden(why: &str) -> HttpResponse {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "error": {"code": zist_core::access::REFUSED, "message": why},
        "id": null,
    });
    let mut response = HttpResponse::new(HttpBody::from(body.to_string()));
    *response.status_mut() = http::StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
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

fn parse_error() -> HttpResponse {
    respond(
        http::StatusCode::OK,
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error: the body is not JSON (UTF-8)"},"id":null}"#,
    )
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
    /// Let jsonrpsee answer it as it is.
    Pass,
    /// Not JSON: answer -32700.
    Unparsable,
    /// Answer -32600 with this id.
    Invalid(Value),
    /// It holds requests jsonrpsee would not run (notifications, ids it
    /// cannot carry): send `body` instead, where each has a private id, and
    /// give their answers back the ids in `ids` (`None`: a notification,
    /// whose answer is dropped).
    Rewritten {
        body: Vec<u8>,
        ids: Vec<Option<Value>>,
    },
}

/// Ids given to requests that jsonrpsee would not run; never a client's own.
const PRIVATE_ID: &str = "\u{1}zist-id-";

fn is_valid_id(id: &Value) -> bool {
    matches!(id, Value::Null | Value::String(_) | Value::Number(_))
}

/// Whether jsonrpsee carries this id itself (strings, null, integers).
fn jsonrpsee_carries(id: &Value) -> bool {
    match id {
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => true,
    }
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

/// Gives a private id to every valid request among `items` that jsonrpsee
/// would not run, recording what its answer gets back.
fn give_private_ids<'a>(items: impl Iterator<Item = &'a mut Value>, ids: &mut Vec<Option<Value>>) {
    for item in items {
        if request_shape(item).is_none() {
            continue;
        }
        let Some(object) = item.as_object_mut() else {
            continue;
        };
        let original = match object.get("id") {
            None => None,
            Some(id) if jsonrpsee_carries(id) => continue,
            Some(id) => Some(id.clone()),
        };
        object.insert(
            "id".to_owned(),
            Value::String(format!("{PRIVATE_ID}{}", ids.len())),
        );
        ids.push(original);
    }
}

fn judge(body: &[u8]) -> Verdict {
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Unparsable;
    };
    let mut ids = Vec::new();
    match &mut value {
        Value::Array(items) if items.is_empty() => return Verdict::Invalid(Value::Null),
        Value::Array(items) => give_private_ids(items.iter_mut(), &mut ids),
        Value::Object(object) => match request_shape(&Value::Object(object.clone())) {
            None => {
                let id = object.get("id").filter(|id| is_valid_id(id)).cloned();
                return Verdict::Invalid(id.unwrap_or(Value::Null));
            }
            Some(_) => give_private_ids(std::iter::once(&mut value), &mut ids),
        },
        _ => return Verdict::Invalid(Value::Null),
    }
    if ids.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Rewritten {
            body: value.to_string().into_bytes(),
            ids,
        }
    }
}

/// The answers to a rewritten body with the clients' ids back, without
/// those to notifications; `None` when nothing is left to send.
fn restore_ids(body: &[u8], ids: &[Option<Value>]) -> Option<Vec<u8>> {
    // Some(None): a notification's answer; Some(Some(id)): the id to restore.
    let private = |answer: &Value| {
        let n: usize = answer
            .get("id")?
            .as_str()?
            .strip_prefix(PRIVATE_ID)?
            .parse()
            .ok()?;
        ids.get(n).cloned()
    };
    let restore = |mut answer: Value| match private(&answer) {
        None => Some(answer),
        Some(None) => None,
        Some(Some(id)) => {
            if let Some(object) = answer.as_object_mut() {
                object.insert("id".to_owned(), id);
            }
            Some(answer)
        }
    };
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Array(answers) => {
            let kept: Vec<Value> = answers.into_iter().filter_map(restore).collect();
            (!kept.is_empty()).then(|| Value::Array(kept).to_string().into_bytes())
        }
        answer => restore(answer).map(|a| a.to_string().into_bytes()),
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

    fn call(&mut self, mut request: HttpRequest<B>) -> Self::Future {
        // A caller the transport vouches for already (the local socket)
        // needs no token, and no browser reaches it.
        if request.extensions().get::<Caller>().is_none() {
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v: &http::HeaderValue| v.to_str().ok())
            };
            // A POST, or a WebSocket handshake, may change something.
            let changes =
                request.method() == http::Method::POST || header(http::header::UPGRADE).is_some();
            if let Some(why) = self.guard.refuse(
                header(http::header::HOST),
                header(http::header::ORIGIN),
                changes,
            ) {
                return Box::pin(async move { Ok(forbidden(&why)) });
            }
            let given = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            match self.access.caller_bearer(given) {
                Some(caller) => {
                    request.extensions_mut().insert(caller);
                }
                None => return Box::pin(async { Ok(unauthorized()) }),
            }
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
            let (body, ids) = match judge(&bytes) {
                Verdict::Unparsable => return Ok(parse_error()),
                Verdict::Invalid(id) => return Ok(invalid_request(id)),
                Verdict::Pass => {
                    let request = HttpRequest::from_parts(parts, HttpBody::from(bytes.to_vec()));
                    return inner.call(request).await.map_err(Into::into);
                }
                Verdict::Rewritten { body, ids } => (body, ids),
            };
            let request = HttpRequest::from_parts(parts, HttpBody::from(body));
            let response = inner.call(request).await.map_err(Into::into)?;
            let (mut parts, body) = response.into_parts();
            let answers = body.collect().await?.to_bytes();
            match restore_ids(&answers, &ids) {
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
            Verdict::Rewritten { body, ids } => {
                (serde_json::from_slice::<Value>(&body).unwrap(), ids)
            }
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            judge(r#"{"jsonrpc":"2.0","method":"a","id":1}"#),
            Verdict::Pass
        );
        let (one, ids) = rewritten(r#"{"jsonrpc":"2.0","method":"a"}"#);
        assert!(one["id"].as_str().unwrap().starts_with(PRIVATE_ID));
        assert_eq!(ids, [None]);
        let (mixed, ids) =
            rewritten(r#"[{"jsonrpc":"2.0","method":"a","id":7},{"jsonrpc":"2.0","method":"b"}]"#);
        assert_eq!(mixed[0]["id"], 7);
        assert!(mixed[1]["id"].as_str().unwrap().starts_with(PRIVATE_ID));
        assert_eq!(ids, [None]);
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
        assert_eq!(judge(r#"{"jsonrpc":"2.0","#), Verdict::Unparsable);
        assert_eq!(judge("hello{{{"), Verdict::Unparsable);
        assert_eq!(super::judge(b"{\"a\":\"\xff\"}"), Verdict::Unparsable);
    }

    #[test]
    fn ids_jsonrpsee_cannot_carry_are_given_back() {
        for id in ["1.5", "1.0", "1e3"] {
            let body = format!(
                r#"[{{"jsonrpc":"2.0","method":"a","id":{id}}},{{"jsonrpc":"2.0","method":"b"}}]"#
            );
            let Verdict::Rewritten { body, ids } = judge(body.as_bytes()) else {
                panic!("{id} not rewritten");
            };
            let sent: Value = serde_json::from_slice(&body).unwrap();
            let original: Value = serde_json::from_str(id).unwrap();
            assert_eq!(ids, [Some(original.clone()), None]);
            let answers = serde_json::json!([
                {"jsonrpc":"2.0","result":1,"id":sent[0]["id"]},
                {"jsonrpc":"2.0","result":2,"id":sent[1]["id"]},
            ]);
            let back: Value =
                serde_json::from_slice(&restore_ids(answers.to_string().as_bytes(), &ids).unwrap())
                    .unwrap();
            assert_eq!(
                back,
                serde_json::json!([{"jsonrpc":"2.0","result":1,"id":original}])
            );
        }
    }

    #[test]
    fn answers_to_notifications_are_dropped() {
        let ours = format!("{PRIVATE_ID}0");
        let ids = [None];
        let single = serde_json::json!({"jsonrpc":"2.0","result":true,"id":ours}).to_string();
        assert_eq!(restore_ids(single.as_bytes(), &ids), None);
        let batch = serde_json::json!([{"jsonrpc":"2.0","result":1,"id":7},{"jsonrpc":"2.0","result":2,"id":ours}]).to_string();
        let kept: Value =
            serde_json::from_slice(&restore_ids(batch.as_bytes(), &ids).unwrap()).unwrap();
        assert_eq!(
            kept,
            serde_json::json!([{"jsonrpc":"2.0","result":1,"id":7}])
        );
    }
}

/// The scope check and the audit line, for each JSON-RPC call (over HTTP,
/// WebSocket or the local socket): `Server::builder().set_rpc_middleware(
/// RpcServiceBuilder::new().layer(ScopeLayer))`. A call outside the
/// caller's scope is answered -32007 and does not run; every call outside
/// the read scope writes an audit line with the caller's name.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScopeLayer;

impl<S> Layer<S> for ScopeLayer {
    type Service = ScopeCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ScopeCheck { inner }
    }
}

/// The service [`ScopeLayer`] makes.
#[derive(Clone, Debug)]
pub struct ScopeCheck<S> {
    inner: S,
}

/// The program a call names (`name`, by name or first by position), for the audit line.
fn target_of(params: Option<&serde_json::value::RawValue>) -> Option<String> {
    let params: Value = serde_json::from_str(params?.get()).ok()?;
    let name = match &params {
        Value::Object(map) => map.get("name").or_else(|| map.get("pid"))?,
        Value::Array(items) => items.first()?,
        _ => return None,
    };
    Some(match name {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn refused(caller: Option<&Caller>, method: &str) -> jsonrpsee::types::ErrorObjectOwned {
    let message = match caller {
        Some(caller) => caller.refusal(method),
        None => format!("no caller is known for {method}"),
    };
    jsonrpsee::types::ErrorObject::owned(zist_core::access::REFUSED, message, None::<()>)
}

fn allowed(caller: Option<&Caller>, method: &str) -> bool {
    caller.is_some_and(|c| c.may_call(method))
}

impl<S> jsonrpsee::server::middleware::rpc::RpcServiceT for ScopeCheck<S>
where
    S: jsonrpsee::server::middleware::rpc::RpcServiceT<
            MethodResponse = jsonrpsee::MethodResponse,
            NotificationResponse = jsonrpsee::MethodResponse,
            BatchResponse = jsonrpsee::MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = jsonrpsee::MethodResponse;
    type NotificationResponse = jsonrpsee::MethodResponse;
    type BatchResponse = jsonrpsee::MethodResponse;

    fn call<'a>(
        &self,
        request: jsonrpsee::types::Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        async move {
            let caller = request.extensions().get::<Caller>().cloned();
            let method = request.method_name().to_owned();
            let audited = zist_core::access::rpc_scope(&method) > zist_core::Scope::Read;
            let target = audited
                .then(|| target_of(request.params.as_deref()))
                .flatten();
            if !allowed(caller.as_ref(), &method) {
                if let Some(caller) = &caller {
                    let result = format!("error {}", zist_core::access::REFUSED);
                    zist_core::access::audit(caller, &method, target.as_deref(), &result);
                }
                return jsonrpsee::MethodResponse::error(
                    request.id().into_owned(),
                    refused(caller.as_ref(), &method),
                );
            }
            let response = inner.call(request).await;
            if audited && let Some(caller) = &caller {
                let result = match response.as_error_code() {
                    None => "ok".to_owned(),
                    Some(code) => format!("error {code}"),
                };
                zist_core::access::audit(caller, &method, target.as_deref(), &result);
            }
            response
        }
    }

    fn batch<'a>(
        &self,
        mut batch: jsonrpsee::core::middleware::Batch<'a>,
    ) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        use jsonrpsee::core::middleware::{BatchEntry, BatchEntryErr};
        // Calls outside the scope are answered -32007 where they stand and
        // do not run; the others run, and those outside read are audited.
        for entry in batch.iter_mut() {
            let Ok(BatchEntry::Call(request)) = entry else {
                continue;
            };
            let caller = request.extensions().get::<Caller>().cloned();
            let method = request.method_name().to_owned();
            if !allowed(caller.as_ref(), &method) {
                *entry = Err(BatchEntryErr::new(
                    request.id().into_owned(),
                    refused(caller.as_ref(), &method),
                ));
            } else if zist_core::access::rpc_scope(&method) > zist_core::Scope::Read
                && let Some(caller) = &caller
            {
                let target = target_of(request.params.as_deref());
                zist_core::access::audit(caller, &method, target.as_deref(), "in a batch");
            }
        }
        self.inner.batch(batch)
    }

    fn notification<'a>(
        &self,
        notification: jsonrpsee::core::middleware::Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        let inner = self.inner.clone();
        async move {
            let caller = notification.extensions().get::<Caller>().cloned();
            if !allowed(caller.as_ref(), notification.method_name()) {
                return jsonrpsee::MethodResponse::notification();
            }
            inner.notification(notification).await
        }
    }
}
