//! zist-http against a real server on 127.0.0.1 with real processes.

mod browser;
mod http_api;
mod scopes;
mod streams;
mod support;
