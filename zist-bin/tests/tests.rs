//! Tests of zistd and zistcl as users run them.

mod access;
mod adopt;
mod cli;
mod continuity;
mod daemon;
mod operations;
mod systems;
mod why;
