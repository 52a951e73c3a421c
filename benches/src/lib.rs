//! Helpers shared by zist's load runs: flags and percentiles.

use std::time::Duration;

/// The value after `--programs` in `args`, or `default`.
pub fn programs_flag(args: &[String], default: usize) -> usize {
    args.iter()
        .position(|a| a == "--programs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `p`-th percentile of `samples` in milliseconds (sorts them).
pub fn percentile_ms(samples: &mut [Duration], p: usize) -> f64 {
    samples.sort();
    let index = (samples.len() * p / 100).min(samples.len().saturating_sub(1));
    samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
