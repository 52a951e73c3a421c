//! Log follow for many clients at once: one hub per program stream reads
//! zist-core's feed, gathers the lines of each burst and encodes them once;
//! every follower gets the same encoded batch.
//!
//! So a follower costs a few wake-ups a second whatever the program's line
//! rate, and a hundred followers cost little more than one. A follower that
//! falls behind skips whole batches and is told how many lines it missed;
//! the program never waits for anyone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use zist_core::{Exposed, Feed, LogStream};

/// After the first item of a quiet spell, wait this long for more, then take
/// all that came: at most ~50 batches a second however chatty the program.
pub(crate) const LINGER: Duration = Duration::from_millis(20);

/// Most items in one batch (zist-core's follow buffer holds 4096 lines).
const MAX_BATCH: usize = 1024;

/// Batches a hub keeps for followers that are behind.
const HUB_BUFFER: usize = 64;

/// The lines of one burst, encoded once for every follower.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Sequence number of the first line (lines are numbered from the hub's start).
    pub first: u64,
    /// How many lines.
    pub count: u64,
    /// The lines as a JSON array of strings.
    pub json: String,
}

/// What a follower is sent.
pub(crate) enum Delivery {
    /// Lines, as a JSON array.
    Lines(Arc<Batch>),
    /// This many lines went by unseen.
    Gap(u64),
}

struct Hub {
    batches: broadcast::Sender<Arc<Batch>>,
    /// The sequence number the next batch starts at.
    next: Arc<AtomicU64>,
}

type Key = (String, LogStream);

/// The live hubs, by program and stream.
#[derive(Clone, Default)]
pub(crate) struct Hubs {
    live: Arc<Mutex<HashMap<Key, Hub>>>,
}

impl Hubs {
    /// New lines of a program's stream, in batches, from now on.
    pub(crate) fn follow(
        &self,
        supervisor: &Exposed,
        name: &str,
        stream: LogStream,
    ) -> zist_core::Result<impl Stream<Item = Delivery> + Send + 'static> {
        let key = (name.to_owned(), stream);
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        // A new hub's first receiver exists before its task starts, so the
        // task never sees an empty hub and leaves.
        let (rx, next) = match live.get(&key) {
            Some(hub) => (hub.batches.subscribe(), hub.next.clone()),
            None => {
                let feed = supervisor.follow(name, stream)?;
                let (batches, rx) = broadcast::channel(HUB_BUFFER);
                let next = Arc::new(AtomicU64::new(0));
                tokio::spawn(run(
                    self.clone(),
                    key.clone(),
                    feed,
                    batches.clone(),
                    next.clone(),
                ));
                live.insert(
                    key,
                    Hub {
                        batches,
                        next: next.clone(),
                    },
                );
                (rx, next)
            }
        };
        drop(live);
        let mut expected = next.load(Ordering::Acquire);
        Ok(BroadcastStream::new(rx)
            .filter_map(move |item| {
                let out = match item {
                    Ok(batch) => {
                        let skipped = batch.first.saturating_sub(expected);
                        expected = expected.max(batch.first + batch.count);
                        if skipped > 0 {
                            // The lines are still worth sending after the gap mark.
                            vec![Delivery::Gap(skipped), Delivery::Lines(batch)]
                        } else {
                            vec![Delivery::Lines(batch)]
                        }
                    }
                    // The next batch's sequence number tells how many lines.
                    Err(BroadcastStreamRecvError::Lagged(_)) => Vec::new(),
                };
                std::future::ready(Some(futures_util::stream::iter(out)))
            })
            .flatten())
    }
}

/// A hub's task: reads the feed in bursts and sends each burst encoded,
/// until the program is gone or the last follower left.
async fn run(
    hubs: Hubs,
    key: Key,
    feed: impl Stream<Item = Feed<String>> + Send + Unpin + 'static,
    batches: broadcast::Sender<Arc<Batch>>,
    next: Arc<AtomicU64>,
) {
    let mut bursts = std::pin::pin!(coalesced(feed).ready_chunks(MAX_BATCH));
    let mut seq = 0u64;
    loop {
        let burst = tokio::select! {
            burst = bursts.next() => burst,
            () = batches.closed() => None,
        };
        let Some(burst) = burst else { break };
        let mut lines = Vec::with_capacity(burst.len());
        for item in burst {
            match item {
                Feed::Item(line) => lines.push(line),
                // The hub itself fell behind zist-core: followers see the gap.
                Feed::Gap(n) => {
                    if !lines.is_empty() {
                        seq = send(&batches, &next, seq, std::mem::take(&mut lines));
                    }
                    seq += n;
                    next.store(seq, Ordering::Release);
                }
            }
        }
        if !lines.is_empty() {
            seq = send(&batches, &next, seq, lines);
        }
    }
    // Gone from the map under its lock, so no follower joins a dead hub.
    let mut live = hubs.live.lock().unwrap_or_else(PoisonError::into_inner);
    if live
        .get(&key)
        .is_some_and(|hub| hub.batches.same_channel(&batches))
    {
        live.remove(&key);
    }
}

/// Encodes and sends one batch; returns the next sequence number.
fn send(
    batches: &broadcast::Sender<Arc<Batch>>,
    next: &AtomicU64,
    first: u64,
    lines: Vec<String>,
) -> u64 {
    let count = lines.len() as u64;
    // Serialising a Vec<String> cannot fail.
    let json = serde_json::to_string(&lines).unwrap_or_default();
    next.store(first + count, Ordering::Release);
    let _ = batches.send(Arc::new(Batch { first, count, json }));
    first + count
}

/// `feed`, read in bursts: when caught up, wait [`LINGER`] after the next
/// item for more to come; when behind, take what is waiting at once.
pub(crate) fn coalesced<T: Send + 'static>(
    feed: impl Stream<Item = T> + Send + Unpin + 'static,
) -> impl Stream<Item = T> + Send + 'static {
    /// Moves what `feed` has ready into `batch`; false when the feed ended.
    /// Unconstrained: tokio's cooperative budget would otherwise report
    /// "nothing ready" after 128 items and cap a follower's rate.
    fn take_ready<T>(feed: &mut (impl Stream<Item = T> + Unpin), batch: &mut Vec<T>) -> bool {
        while batch.len() < MAX_BATCH {
            match tokio::task::unconstrained(feed.next()).now_or_never() {
                Some(Some(item)) => batch.push(item),
                Some(None) => return false,
                None => break,
            }
        }
        true
    }
    futures_util::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        let mut batch = Vec::new();
        let mut open = take_ready(&mut feed, &mut batch);
        if open && batch.is_empty() {
            batch.push(feed.next().await?);
            tokio::time::sleep(LINGER).await;
            open = take_ready(&mut feed, &mut batch);
        } else {
            // Behind: everything is ready at once, so give the other tasks
            // their turn (take_ready is outside tokio's budget).
            tokio::task::yield_now().await;
        }
        if batch.is_empty() {
            return None;
        }
        Some((futures_util::stream::iter(batch), open.then_some(feed)))
    })
    .flatten()
}
