//! Tests of zistd and zistcl as users run them.

mod daemon;
