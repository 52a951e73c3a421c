//! Test helpers: zist-core's own test support (feature `testing`), shared
//! with every crate's tests.

pub use zist_core::testing::{Dir, Groups, Sup, alive, eventually, group_alive, wait_state};

pub const SECS_5: std::time::Duration = std::time::Duration::from_secs(5);
pub const SECS_10: std::time::Duration = std::time::Duration::from_secs(10);
