//! Scopes on the HTTP API and the seed routes, and the browser rules
//! (docs/reference.md §10).

use std::time::Duration;

use zist_core::testing::wait_state;
use zist_core::{Access, NamedToken, ProcessState, Scope, Token};
use zist_http::HttpOptions;

use crate::support::{Rig, TOKEN};

const OPERATE: &str = "ci-token";
const READ: &str = "dash-token";

async fn rig() -> Rig {
    let access = Access::new(
        TOKEN,
        &[
            NamedToken {
                name: "ci".into(),
                token: Token::new(OPERATE),
                scope: Scope::Operate,
            },
            NamedToken {
                name: "dashboard".into(),
                token: Token::new(READ),
                scope: Scope::Read,
            },
        ],
    );
    let rig = Rig::with_access(HttpOptions::default(), access).await;
    rig.add("web", "sleep 300", true).await;
    wait_state(
        &rig.sup,
        "web",
        ProcessState::Running,
        Duration::from_secs(5),
    )
    .await;
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_one_scope_and_a_refused_call_changes_nothing() {
    let rig = rig().await;
    let pid = rig.sup.info("web").unwrap().pid;
    // (method, path, scope); seed paths start with the token.
    let routes: &[(&str, String, Scope)] = &[
        ("GET", "/api/v1/processes".into(), Scope::Read),
        ("GET", "/api/v1/processes/web".into(), Scope::Read),
        ("GET", "/api/v1/processes/web/stats".into(), Scope::Read),
        (
            "GET",
            "/api/v1/processes/web/logs/stdout".into(),
            Scope::Read,
        ),
        ("GET", "/api/v1/stats".into(), Scope::Read),
        ("GET", "/metrics".into(), Scope::Read),
        ("POST", "/api/v1/processes/web/stop".into(), Scope::Operate),
        (
            "POST",
            "/api/v1/processes/web/restart".into(),
            Scope::Operate,
        ),
        (
            "POST",
            "/api/v1/processes/web/detach".into(),
            Scope::Operate,
        ),
        ("POST", "/api/v1/processes/web/scale".into(), Scope::Operate),
        ("POST", "/api/v1/adopt".into(), Scope::Admin),
    ];
    for (method, path, scope) in routes {
        for (token, has) in [(READ, Scope::Read), (OPERATE, Scope::Operate)] {
            if has >= *scope {
                // Allowed: it runs (on a program that is not there, for a change).
                let path = if *method == "POST" {
                    path.replace("/web/", "/nope/")
                } else {
                    path.clone()
                };
                let (status, body) = rig.call(method, &path, Some(token)).await;
                assert_ne!(status, 403, "{method} {path} by {has}: {body}");
                assert_ne!(status, 401, "{method} {path} by {has}: {body}");
            } else {
                let (status, body) = rig.call(method, path, Some(token)).await;
                assert_eq!(status, 403, "{method} {path} by {has}: {body}");
                assert_eq!(body["error"]["code"], "forbidden", "{body}");
                let message = body["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains(&format!("scope {has}")), "{message}");
            }
        }
    }
    let web = rig.sup.info("web").unwrap();
    assert_eq!((web.state, web.pid), (ProcessState::Running, pid));

    // The seed's routes: listing and reading need read, actions operate.
    for action in ["kill", "start", "restart", "detach"] {
        let (status, _) = rig
            .call("GET", &format!("/{READ}/web/{action}"), None)
            .await;
        assert_eq!(status, 403, "seed {action} by read");
    }
    let (status, _) = rig.call("GET", &format!("/{READ}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = rig.call("GET", &format!("/{READ}/web/stats"), None).await;
    assert_eq!(status, 200);
    let web = rig.sup.info("web").unwrap();
    assert_eq!((web.state, web.pid), (ProcessState::Running, pid));
    let (status, _) = rig.call("GET", &format!("/{OPERATE}/web/kill"), None).await;
    assert_eq!(status, 200);
    assert_eq!(rig.sup.info("web").unwrap().state, ProcessState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_cannot_reach_in_by_host_origin_referer_or_fetch_site() {
    let rig = rig().await;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    // DNS rebinding: another name for this address.
    let raw = format!(
        "GET /api/v1/processes HTTP/1.1\r\nHost: evil.example\r\n{auth}Connection: close\r\n\r\n"
    );
    let addr = rig.addr;
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(raw.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // A cross-site POST.
    let (status, _, _) = rig
        .raw_with(
            "POST",
            "/api/v1/processes/web/stop",
            &format!("{auth}Origin: http://evil.example\r\n"),
        )
        .await;
    assert_eq!(status, 403);
    // An <img> on another page: no Origin, but the browser says where it is from.
    let kill = format!("/{TOKEN}/web/kill");
    for header in [
        "Sec-Fetch-Site: cross-site\r\n",
        "Referer: http://evil.example/page\r\n",
        "Origin: http://evil.example\r\n",
    ] {
        let (status, _, _) = rig.raw_with("GET", &kill, header).await;
        assert_eq!(status, 403, "{header}");
    }
    assert_eq!(rig.sup.info("web").unwrap().state, ProcessState::Running);
    // The dashboard itself (same origin) may.
    let same = format!(
        "Origin: http://{}\r\nSec-Fetch-Site: same-origin\r\n",
        rig.addr
    );
    let (status, head, _) = rig
        .raw_with(
            "POST",
            "/api/v1/processes/web/stop",
            &format!("{auth}{same}"),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin")
    );
}
