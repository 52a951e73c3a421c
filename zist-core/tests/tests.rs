//! Integration tests of zist-core: real processes, real files, no mocks.

mod support;

mod api;
mod config;
mod detach;
mod engine;
mod instances;
mod logs;
mod order;
