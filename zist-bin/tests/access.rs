//! Tokens with scopes and the audit log, as zistd runs them (docs/reference.md §10).

use std::time::Duration;

use serde_json::{Value, json};
use zist_core::testing::{eventually_blocking, request};

use crate::daemon::{Setup, TOKEN, program};

const CI: &str = "ci-secret-5f2a";
const DASHBOARD: &str = "dashboard-secret-9b1c";

fn call(addr: &str, token: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let headers = format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n");
    let answer = request(
        addr.parse().unwrap(),
        "POST",
        "/",
        &headers,
        body.as_bytes(),
    )
    .unwrap();
    serde_json::from_str(&answer.body).unwrap_or(Value::Null)
}

#[test]
fn each_token_has_its_scope_and_every_change_is_audited_by_name() {
    let setup = Setup::new(&format!(
        "Tokens = [\n  {{ Name = \"ci\", Token = \"{CI}\", Scope = \"operate\" }},\n  {{ Name = \"dashboard\", Token = \"{DASHBOARD}\", Scope = \"read\" }},\n]\n{}",
        program("web", std::path::Path::new("/bin/sleep"), "Args = \"340\"")
    ));
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "web to run", || {
        zistd.info("web")["state"] == "running"
    });
    let rpc = zistd.rpc.clone();
    let refused = call(&rpc, DASHBOARD, "process.stop", json!({"name": "web"}));
    assert_eq!(refused["error"]["code"], -32007, "{refused}");
    assert_eq!(
        refused["error"]["message"],
        "this token (scope read) may not call process.stop"
    );
    let status = call(&rpc, DASHBOARD, "daemon.status", json!([]));
    assert!(status["result"].is_object(), "{status}");
    let restarted = call(&rpc, CI, "process.restart", json!({"name": "web"}));
    assert_eq!(restarted["result"]["name"], "web", "{restarted}");
    let refused = call(&rpc, CI, "process.remove", json!({"name": "web"}));
    assert_eq!(refused["error"]["code"], -32007, "{refused}");
    let missing = call(&rpc, TOKEN, "process.stop", json!({"name": "nope"}));
    assert_eq!(missing["error"]["code"], -32001, "{missing}");
    // The HTTP API: the same scopes, the same audit lines.
    let http = zistd.http.clone().expect("the HTTP API");
    let stop = request(
        http.parse().unwrap(),
        "POST",
        "/api/v1/processes/web/stop",
        &format!("Authorization: Bearer {CI}\r\n"),
        b"",
    )
    .unwrap();
    assert_eq!(stop.status, 200, "{stop:?}");

    let log = std::fs::read_to_string(setup.path("logs/zistd.log")).unwrap();
    for line in [
        "audit who=ci method=process.restart target=web result=ok",
        "audit who=token method=process.stop target=nope result=error -32001",
        "audit who=ci method=process.stop target=web result=ok",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
    // Reading is not audited; no token's value is ever written.
    assert!(!log.contains("method=daemon.status"), "{log}");
    for secret in [CI, DASHBOARD, TOKEN] {
        assert!(!log.contains(secret), "a token in the log:\n{log}");
    }
}
