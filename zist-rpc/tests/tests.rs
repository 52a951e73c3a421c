//! zist-rpc against a real server on 127.0.0.1 with real processes.

mod rpc;
mod scopes;
