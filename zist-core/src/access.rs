//! Who may do what (docs/reference.md §10): tokens with scopes, the one
//! table of which scope each method and route needs, and the audit line.
//!
//! Both network faces ask this module and nothing else: zist-rpc for each
//! JSON-RPC call (over HTTP, WebSocket or the local socket), zist-http for
//! each route. A token is found by comparing the one given with every
//! configured token in constant time, all of them every time, so the time
//! taken tells nothing of which one matched or how much of it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::token::Token;

/// What a token may do; each scope allows everything the ones before it do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Look: status, lists, info, stats, logs, events, metrics.
    Read,
    /// Read, and act on programs: start, stop, restart, signal, detach, scale.
    Operate,
    /// Everything: add, remove and adopt programs, reload, shut down, upgrade.
    Admin,
}

impl Scope {
    /// The name users write (`"read"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
            Self::Admin => "admin",
        }
    }

    /// Reads `"read"`, `"operate"` or `"admin"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "operate" => Some(Self::Operate),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling, as a token or the local socket vouches: what audit
/// lines name (never a token's value) and what the call may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's `Name` (`token` for the daemon's `Token`), or `uid=N`.
    pub who: Arc<str>,
    /// What it may do.
    pub scope: Scope,
}

impl Caller {
    /// A caller on the local socket, by the peer's uid.
    pub fn local(uid: u32, scope: Scope) -> Self {
        Self {
            who: format!("uid={uid}").into(),
            scope,
        }
    }

    /// Whether this caller may call JSON-RPC `method`.
    pub fn may_call(&self, method: &str) -> bool {
        self.scope >= rpc_scope(method)
    }

    /// The refusal of `what` (a method, or a route): `this token (scope
    /// read) may not call process.stop`.
    pub fn refusal(&self, what: &str) -> String {
        let by = if self.who.starts_with("uid=") {
            format!("{} (scope {})", self.who, self.scope)
        } else {
            format!("this token (scope {})", self.scope)
        };
        format!("{by} may not call {what}")
    }
}

/// A token with a name and a scope (daemon key `Tokens`).
#[derive(Clone)]
pub struct NamedToken {
    /// What audit lines call it.
    pub name: String,
    /// The secret.
    pub token: Token,
    /// What it may do.
    pub scope: Scope,
}

impl std::fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamedToken({}, {})", self.name, self.scope)
    }
}

/// Every token a daemon accepts.
#[derive(Clone, Debug, Default)]
pub struct Access {
    tokens: Arc<[NamedToken]>,
}

impl Access {
    /// The daemon's `Token` (admin, named `token`; empty: none) and its `Tokens`.
    pub fn new(token: &str, named: &[NamedToken]) -> Self {
        let mut tokens = Vec::with_capacity(named.len() + 1);
        if !token.is_empty() {
            tokens.push(NamedToken {
                name: "token".to_owned(),
                token: Token::new(token),
                scope: Scope::Admin,
            });
        }
        tokens.extend(named.iter().cloned());
        Self {
            tokens: tokens.into(),
        }
    }

    /// The caller whose token is `secret`; every token is compared, in
    /// constant time, whatever matches.
    pub fn caller(&self, secret: &[u8]) -> Option<Caller> {
        let mut found = None;
        for named in self.tokens.iter() {
            if named.token.matches(secret) && found.is_none() {
                found = Some(Caller {
                    who: named.name.as_str().into(),
                    scope: named.scope,
                });
            }
        }
        found
    }

    /// The caller an `Authorization` header names in the `Bearer` scheme
    /// (its name in any case, RFC 7235).
    pub fn caller_bearer(&self, header: &[u8]) -> Option<Caller> {
        let space = header.iter().position(|&b| b == b' ')?;
        let (scheme, rest) = header.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return None;
        }
        self.caller(rest.trim_ascii_start())
    }
}

impl From<&str> for Access {
    /// Just the daemon's `Token` (admin).
    fn from(token: &str) -> Self {
        Self::new(token, &[])
    }
}

/// The JSON-RPC error code of a call outside the caller's scope.
pub const REFUSED: i32 = -32007;

/// The scope a JSON-RPC method needs; an unknown method needs read (it
/// answers "method not found" and changes nothing).
pub fn rpc_scope(method: &str) -> Scope {
    match method {
        "process.start"
        | "process.stop"
        | "process.restart"
        | "process.signal"
        | "process.detach"
        | "process.scale"
        | "process.start_all"
        | "process.stop_all"
        | "process.restart_all" => Scope::Operate,
        "process.add" | "process.remove" | "process.adopt" | "daemon.reload"
        | "daemon.shutdown" | "daemon.upgrade" | "daemon.clear_log" => Scope::Admin,
        _ => Scope::Read,
    }
}

/// The scope an HTTP API route needs: every GET is read; a POST acts on
/// programs (operate), but adopting a process is admin.
pub fn http_scope(get: bool, path: &str) -> Scope {
    if get {
        Scope::Read
    } else if path.trim_end_matches('/') == "/api/v1/adopt" {
        Scope::Admin
    } else {
        Scope::Operate
    }
}

/// The scope a seed route (`/{token}/{program}/{action}`) needs.
pub fn seed_scope(action: Option<&str>) -> Scope {
    match action {
        Some("kill" | "start" | "restart" | "detach") => Scope::Operate,
        _ => Scope::Read,
    }
}

/// Writes the audit line of a call outside the read scope: `audit
/// who=ci method=process.restart target=web result=ok`.
pub fn audit(caller: &Caller, method: &str, target: Option<&str>, result: &str) {
    tracing::info!(
        "audit who={} method={method} target={} result={result}",
        caller.who,
        target.unwrap_or("-")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_token_has_its_scope_and_a_caller_is_named_never_by_its_secret() {
        let access = Access::new(
            "admin-secret",
            &[
                NamedToken {
                    name: "dashboard".into(),
                    token: Token::new("read-secret"),
                    scope: Scope::Read,
                },
                NamedToken {
                    name: "ci".into(),
                    token: Token::new("ci-secret"),
                    scope: Scope::Operate,
                },
            ],
        );
        let caller = |header: &str| access.caller_bearer(header.as_bytes());
        assert_eq!(caller("Bearer admin-secret").unwrap().scope, Scope::Admin);
        assert_eq!(
            caller("bearer read-secret").unwrap().who.as_ref(),
            "dashboard"
        );
        let ci = caller("Bearer ci-secret").unwrap();
        assert_eq!((ci.who.as_ref(), ci.scope), ("ci", Scope::Operate));
        assert!(ci.may_call("process.restart") && !ci.may_call("process.add"));
        assert_eq!(
            ci.refusal("daemon.reload"),
            "this token (scope operate) may not call daemon.reload"
        );
        for bad in [
            "Bearer ci-secre",
            "Basic ci-secret",
            "Bearer ",
            "",
            "ci-secret",
        ] {
            assert_eq!(caller(bad), None, "{bad}");
        }
        assert_eq!(Access::new("", &[]).caller(b""), None);
        assert!(!format!("{access:?}").contains("secret\""));
    }

    #[test]
    fn every_method_is_in_one_scope() {
        for (method, scope) in [
            ("daemon.status", Scope::Read),
            ("process.follow", Scope::Read),
            ("events.subscribe", Scope::Read),
            ("process.scale", Scope::Operate),
            ("process.stop_all", Scope::Operate),
            ("process.adopt", Scope::Admin),
            ("daemon.clear_log", Scope::Admin),
        ] {
            assert_eq!(rpc_scope(method), scope, "{method}");
        }
        assert_eq!(http_scope(true, "/metrics"), Scope::Read);
        assert_eq!(
            http_scope(false, "/api/v1/processes/web/stop"),
            Scope::Operate
        );
        assert_eq!(http_scope(false, "/api/v1/adopt"), Scope::Admin);
        assert_eq!(seed_scope(Some("kill")), Scope::Operate);
        assert_eq!(seed_scope(Some("stats")), Scope::Read);
        assert_eq!(seed_scope(None), Scope::Read);
    }
}

/// The rules that keep web pages a user opens from using zistd (docs/reference.md
/// §10): DNS rebinding (a foreign `Host`), cross-site requests (a foreign
/// `Origin`, `Referer` or `Sec-Fetch-Site`).
#[derive(Clone, Debug, Default)]
pub struct BrowserGuard {
    allowed_hosts: Arc<[String]>,
}

/// The host of an authority (`host:port`, `[v6]:port`, `host`), lowercase.
fn host_of(authority: &str) -> String {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    host
                } else {
                    authority
                }
            })
    };
    host.to_ascii_lowercase()
}

/// The authority (`host:port`) of a URL (`https://a.example:8443/x`), lowercase.
fn authority_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(authority.to_ascii_lowercase())
}

impl BrowserGuard {
    /// Host names accepted besides IP addresses and `localhost` (`AllowedHosts`).
    pub fn new(allowed_hosts: &[String]) -> Self {
        Self {
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Why a request is refused, or `None`. `host` and `origin` are the
    /// headers; `changes` is true for a request that may change something
    /// or open a stream of its own (a POST, a WebSocket handshake).
    pub fn refuse(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        changes: bool,
    ) -> Option<String> {
        if let Some(host) = host {
            let name = host_of(host);
            let known = name.parse::<std::net::IpAddr>().is_ok()
                || name == "localhost"
                || self.allowed_hosts.contains(&name);
            if !known {
                return Some(format!(
                    "Host {name:?} is not an address of this zistd; add it to AllowedHosts to serve it"
                ));
            }
        }
        if changes && let Some(origin) = origin {
            let own = host.map(str::to_ascii_lowercase);
            if authority_of(origin) != own {
                return Some(format!(
                    "a request from another site ({origin}) may not change anything here"
                ));
            }
        }
        None
    }

    /// [`BrowserGuard::refuse`] for a seed action route, which an `<img>`
    /// can reach with no `Origin`: also refused when the browser says it
    /// comes from another site (`Sec-Fetch-Site: cross-site`) or its
    /// `Referer` is another site's.
    pub fn refuse_action(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        fetch_site: Option<&str>,
        referer: Option<&str>,
    ) -> Option<String> {
        if let Some(why) = self.refuse(host, origin, true) {
            return Some(why);
        }
        if fetch_site.is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
            return Some("a request from another site may not change anything here".into());
        }
        if let Some(referer) = referer
            && authority_of(referer) != host.map(str::to_ascii_lowercase)
        {
            return Some(format!(
                "a request from another page ({}) may not change anything here",
                authority_of(referer).unwrap_or_default()
            ));
        }
        None
    }
}

#[cfg(test)]
mod browser_tests {
    use super::*;

    #[test]
    fn hosts_must_be_addresses_localhost_or_allowed_and_changes_come_from_the_same_site() {
        let guard = BrowserGuard::new(&["Zist.Example.com".to_owned()]);
        for host in [
            "127.0.0.1:7000",
            "[::1]:7000",
            "localhost:7000",
            "LOCALHOST",
            "10.0.0.5",
            "zist.example.com:7000",
        ] {
            assert_eq!(guard.refuse(Some(host), None, true), None, "{host}");
        }
        assert!(guard.refuse(Some("evil.example"), None, false).is_some());
        assert!(
            guard
                .refuse(Some("evil.example:7000"), None, false)
                .is_some()
        );
        assert_eq!(guard.refuse(None, None, true), None);
        let host = Some("127.0.0.1:7000");
        assert_eq!(
            guard.refuse(host, Some("http://127.0.0.1:7000"), true),
            None
        );
        assert!(
            guard
                .refuse(host, Some("http://evil.example"), true)
                .is_some()
        );
        assert!(guard.refuse(host, Some("null"), true).is_some());
        // Reading is not refused for an Origin (a GET changes nothing).
        assert_eq!(guard.refuse(host, Some("http://evil.example"), false), None);
        assert!(
            guard
                .refuse_action(host, None, Some("cross-site"), None)
                .is_some()
        );
        assert_eq!(
            guard.refuse_action(host, None, Some("same-origin"), None),
            None
        );
        assert!(
            guard
                .refuse_action(host, None, None, Some("http://evil.example/page"))
                .is_some()
        );
        assert_eq!(
            guard.refuse_action(host, None, None, Some("http://127.0.0.1:7000/")),
            None
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// A small deterministic generator (xorshift), so a failure repeats.
    struct Bytes(u64);

    impl Bytes {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn take(&mut self) -> Vec<u8> {
            let len = match self.next() % 64 {
                0..=15 => 0,
                16..=39 => (self.next() % 16) as usize,
                40..=62 => (self.next() % 200) as usize,
                _ => (self.next() % 70_000) as usize,
            };
            let pick: &[u8] = match self.next() % 3 {
                0 => b"Bearer bearer  admin-secret ci:,/[]@\xff\xfe\x00\t",
                1 => b" ",
                _ => &[],
            };
            (0..len)
                .map(|_| match pick {
                    [] => self.next() as u8,
                    pick => pick[(self.next() as usize) % pick.len()],
                })
                .collect()
        }
    }

    #[test]
    fn any_header_bytes_are_answered_without_a_panic_and_match_only_a_token() {
        let access = Access::new("admin-secret", &[]);
        let guard = BrowserGuard::new(&["zist.example.com".to_owned()]);
        let mut bytes = Bytes(0x9e37_79b9_7f4a_7c15);
        for _ in 0..10_000 {
            let header = bytes.take();
            let caller = access.caller_bearer(&header);
            if caller.is_some() {
                // Only the scheme, spaces, then exactly the token.
                let text = String::from_utf8_lossy(&header).into_owned();
                assert!(text.to_ascii_lowercase().starts_with("bearer "), "{text:?}");
                assert_eq!(text.split_at(6).1.trim_start(), "admin-secret");
            }
            let (host, origin) = (bytes.take(), bytes.take());
            let _ = guard.refuse(
                std::str::from_utf8(&host).ok(),
                std::str::from_utf8(&origin).ok(),
                true,
            );
        }
        assert!(access.caller_bearer(b"Bearer admin-secret").is_some());
    }
}
