//! A short history of every program's CPU and memory, for charts that
//! survive a page reload (docs/reference.md §5.2).
//!
//! Sampled only while someone looks: the first ask starts a sampler that
//! takes one sample of every `Web = true` program each [`EVERY`] (one
//! scan of the process table for all), and it stops, forgetting what it
//! kept, once nobody has asked for [`IDLE`]. A sample is 8 bytes, so the
//! [`SPAN`] of 1000 programs is about 1.4 MB.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// Time between two samples.
pub const EVERY: Duration = Duration::from_secs(5);
/// How far back the history goes.
pub const SPAN: Duration = Duration::from_secs(15 * 60);
/// The sampler stops this long after the last ask.
pub const IDLE: Duration = Duration::from_secs(5 * 60);

/// Samples kept per program.
const SAMPLES: usize = (SPAN.as_secs() / EVERY.as_secs()) as usize;

/// One program's history, as the API gives it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    /// When the first sample was taken, milliseconds since the Unix epoch;
    /// the others follow at `every_secs`.
    pub start_ms: u64,
    /// Seconds between samples.
    pub every_secs: u64,
    /// CPU, percent of one core (`null`: no process then).
    pub cpu_percent: Vec<Option<f32>>,
    /// Resident memory, bytes (`null`: no process then).
    pub memory_bytes: Vec<Option<u64>>,
}

#[derive(Debug, Default)]
struct Kept {
    /// The tick number of the first sample.
    first: u64,
    /// CPU percent and memory in KiB; NaN when the program had no process.
    samples: VecDeque<(f32, u32)>,
}

#[derive(Debug, Default)]
struct State {
    /// Ticks taken since the sampler started; the last one's time.
    ticks: u64,
    last_at_ms: u64,
    series: HashMap<String, Kept>,
    asked: Option<Instant>,
    sampling: bool,
}

/// The history of every program (see the module's documentation).
#[derive(Debug, Default)]
pub struct History {
    state: Mutex<State>,
}

impl History {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Someone looks: true when a sampler should be started for it.
    pub(crate) fn asked(&self) -> bool {
        let mut state = self.lock();
        state.asked = Some(Instant::now());
        !std::mem::replace(&mut state.sampling, true)
    }

    /// Whether the sampler should go on; when not, what it kept is dropped.
    pub(crate) fn still_wanted(&self) -> bool {
        let mut state = self.lock();
        if state.asked.is_some_and(|at| at.elapsed() < IDLE) {
            return true;
        }
        *state = State::default();
        false
    }

    /// Takes one sample: each program's CPU percent and memory, `None`
    /// for one with no process.
    pub(crate) fn record(&self, samples: impl IntoIterator<Item = (String, Option<(f64, u64)>)>) {
        let mut state = self.lock();
        let tick = state.ticks;
        state.ticks += 1;
        state.last_at_ms = now_ms();
        let mut seen = std::collections::HashSet::new();
        for (name, sample) in samples {
            let (cpu, kib) = match sample {
                Some((cpu, bytes)) => (cpu as f32, u32::try_from(bytes / 1024).unwrap_or(u32::MAX)),
                None => (f32::NAN, 0),
            };
            let kept = state.series.entry(name.clone()).or_insert_with(|| Kept {
                first: tick,
                samples: VecDeque::new(),
            });
            // A gap (the program was not sampled) is filled as "no process".
            while kept.first + (kept.samples.len() as u64) < tick {
                kept.samples.push_back((f32::NAN, 0));
            }
            kept.samples.push_back((cpu, kib));
            while kept.samples.len() > SAMPLES {
                kept.samples.pop_front();
                kept.first += 1;
            }
            seen.insert(name);
        }
        // A program gone (removed) for the whole span is forgotten.
        state
            .series
            .retain(|name, kept| seen.contains(name) || kept.first + (SAMPLES as u64) > tick);
    }

    /// Every program's history, by name.
    pub(crate) fn series(&self) -> BTreeMap<String, Series> {
        let state = self.lock();
        let last = state.ticks.saturating_sub(1);
        state
            .series
            .iter()
            .map(|(name, kept)| {
                let ago = last.saturating_sub(kept.first) * EVERY.as_millis() as u64;
                let series = Series {
                    start_ms: state.last_at_ms.saturating_sub(ago),
                    every_secs: EVERY.as_secs(),
                    cpu_percent: kept
                        .samples
                        .iter()
                        .map(|(cpu, _)| (!cpu.is_nan()).then_some(*cpu))
                        .collect(),
                    memory_bytes: kept
                        .samples
                        .iter()
                        .map(|(cpu, kib)| (!cpu.is_nan()).then_some(u64::from(*kib) * 1024))
                        .collect(),
                };
                (name.clone(), series)
            })
            .collect()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_line_up_fill_gaps_and_stay_within_the_span() {
        let history = History::default();
        assert!(history.asked(), "the first ask starts a sampler");
        assert!(!history.asked(), "one sampler at a time");
        history.record([("a".to_owned(), Some((12.5, 4096)))]);
        history.record([("b".to_owned(), Some((1.0, 2048)))]);
        history.record([("a".to_owned(), Some((50.0, 8192))), ("b".to_owned(), None)]);
        let series = history.series();
        assert_eq!(series["a"].cpu_percent, [Some(12.5), None, Some(50.0)]);
        assert_eq!(series["a"].memory_bytes, [Some(4096), None, Some(8192)]);
        assert_eq!(series["b"].cpu_percent, [Some(1.0), None]);
        // b started a tick later: its first sample is EVERY after a's.
        assert_eq!(
            series["b"].start_ms - series["a"].start_ms,
            EVERY.as_millis() as u64
        );
        for _ in 0..SAMPLES + 10 {
            history.record([("a".to_owned(), Some((1.0, 1024)))]);
        }
        let series = history.series();
        assert_eq!(series["a"].cpu_percent.len(), SAMPLES);
        assert!(!series.contains_key("b"), "b was gone for the whole span");
    }
}
