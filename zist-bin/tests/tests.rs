//! Tests of zistd and zistcl as users run them.

mod continuity;
mod daemon;
