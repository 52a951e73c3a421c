//! API v1 (docs/reference.md §5.2): JSON routes with a bearer token, and Server-Sent
//! Events for log follow and state changes.
//!
//! Streams never buffer per client: a follower reads zist-core's shared ring
//! (a slow one gets a `gap` event with the number of skipped items, the
//! program never waits), and a client that stops reading altogether is
//! dropped by the server's write timeout.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use futures_util::{Stream, StreamExt};
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Rejection, Reply};
use zist_core::{DEFAULT_LINES, Feed, LogStream, ProcessAction};

use crate::follow::{Delivery, coalesced};
use crate::{Authorized, State, authorized, error, from_core, not_found, ok};

type Query = HashMap<String, String>;

/// Every API v1 route.
pub(crate) fn routes(
    state: &State,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let v1 = warp::path!("api" / "v1" / ..);
    let processes = v1.and(warp::path("processes"));
    let list = processes
        .and(warp::path::end())
        .and(warp::get())
        .and(authorized(state))
        .then(|state: Authorized| async move {
            match state {
                Ok(state) => ok(&state.supervisor.list()),
                Err(refused) => *refused,
            }
        });
    let info = processes
        .and(warp::path!(String))
        .and(warp::get())
        .and(authorized(state))
        .then(|name: String, state: Authorized| async move {
            match state {
                Ok(state) => state
                    .supervisor
                    .info(&name)
                    .map_or_else(from_core, |i| ok(&i)),
                Err(refused) => *refused,
            }
        });
    let scale = processes
        .and(warp::path!(String / "scale"))
        .and(warp::post())
        .and(warp::body::content_length_limit(1024))
        .and(warp::body::bytes())
        .and(authorized(state))
        .then(
            |name: String, body: bytes::Bytes, state: Authorized| async move {
                let state = match state {
                    Ok(state) => state,
                    Err(refused) => return *refused,
                };
                #[derive(serde::Deserialize)]
                struct Scale {
                    instances: u32,
                }
                match json_body::<Scale>(&body, r#"{"instances": N}"#) {
                    Ok(Scale { instances }) => state
                        .supervisor
                        .scale(&name, instances)
                        .await
                        .map_or_else(from_core, |i| ok(&i)),
                    Err(refused) => *refused,
                }
            },
        );
    let action = processes
        .and(warp::path!(String / String))
        .and(warp::post())
        .and(warp::query::<Query>())
        .and(authorized(state))
        .then(
            |name: String, action: String, query: Query, state: Authorized| async move {
                let state = match state {
                    Ok(state) => state,
                    Err(refused) => return *refused,
                };
                let action: ProcessAction = match action.parse() {
                    Ok(action) => action,
                    Err(e) => return not_found(e.to_string()),
                };
                let acted = if action == ProcessAction::Restart
                    && query.get("rolling").is_some_and(|v| v == "true")
                {
                    state.supervisor.restart_rolling(&name).await
                } else {
                    state.supervisor.act(&name, action).await
                };
                acted.map_or_else(from_core, |a| ok(&a))
            },
        );
    // A program's spec (Env by key only), for the dashboard's panel.
    let spec = processes
        .and(warp::path!(String / "spec"))
        .and(warp::get())
        .and(authorized(state))
        .map(|name: String, state: Authorized| match state {
            Ok(state) => state
                .supervisor
                .exposed()
                .spec_view(&name)
                .map_or_else(from_core, |s| ok(&s)),
            Err(refused) => *refused,
        });
    // `{"signal": "HUP"}`: as process.signal.
    let signal = processes
        .and(warp::path!(String / "signal"))
        .and(warp::post())
        .and(warp::body::content_length_limit(1024))
        .and(warp::body::bytes())
        .and(authorized(state))
        .then(
            |name: String, body: bytes::Bytes, state: Authorized| async move {
                let state = match state {
                    Ok(state) => state,
                    Err(refused) => return *refused,
                };
                #[derive(serde::Deserialize)]
                struct Send {
                    signal: String,
                }
                let signal = match json_body::<Send>(&body, r#"{"signal": "HUP"}"#) {
                    Ok(Send { signal }) => signal,
                    Err(refused) => return *refused,
                };
                match zist_core::parse_signal(&signal) {
                    Ok(signal) => state
                        .supervisor
                        .act(&name, ProcessAction::Signal(signal))
                        .await
                        .map_or_else(from_core, |a| ok(&a)),
                    Err(e) => error(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
                }
            },
        );
    let stats = processes
        .and(warp::path!(String / "stats"))
        .and(warp::get())
        .and(authorized(state))
        .then(|name: String, state: Authorized| async move {
            let state = match state {
                Ok(state) => state,
                Err(refused) => return *refused,
            };
            state
                .supervisor
                .exposed()
                .stats(&name)
                .await
                .map_or_else(from_core, |s| ok(&s))
        });
    let logs = processes
        .and(warp::path!(String / "logs" / String))
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(authorized(state))
        .then(
            |name: String, stream: String, query: Query, state: Authorized| async move {
                match state {
                    Ok(state) => logs(&state, &name, &stream, &query),
                    Err(refused) => *refused,
                }
            },
        );
    let all_stats = v1
        .and(warp::path!("stats"))
        .and(warp::get())
        .and(authorized(state))
        .then(|state: Authorized| async move {
            match state {
                Ok(state) => all_stats(&state).await,
                Err(refused) => *refused,
            }
        });
    // The dashboard's charts: what zistd sampled (and keeps sampling while asked).
    let history = v1
        .and(warp::path!("history"))
        .and(warp::get())
        .and(authorized(state))
        .map(|state: Authorized| match state {
            Ok(state) => ok(&state.supervisor.history()),
            Err(refused) => *refused,
        });
    let events = v1
        .and(warp::path!("events"))
        .and(warp::get())
        .and(authorized(state))
        .map(|state: Authorized| match state {
            Ok(state) => events(&state),
            Err(refused) => *refused,
        });
    let adopt = v1
        .and(warp::path!("adopt"))
        .and(warp::post())
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::bytes())
        .and(authorized(state))
        .then(|body: bytes::Bytes, state: Authorized| async move {
            let state = match state {
                Ok(state) => state,
                Err(refused) => return *refused,
            };
            match serde_json::from_slice::<zist_core::AdoptRequest>(&body) {
                Ok(request) => state
                    .supervisor
                    .adopt(request)
                    .await
                    .map_or_else(from_core, |i| ok(&i)),
                Err(e) => error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!(
                        "the body must be {{\"pid\": N, \"name\"?, \"spec\"?, \"capture\"?}}: {e}"
                    ),
                ),
            }
        });
    list.or(info)
        .unify()
        .or(adopt)
        .unify()
        .or(scale)
        .unify()
        .or(signal)
        .unify()
        .or(spec)
        .unify()
        .or(action)
        .unify()
        .or(stats)
        .unify()
        .or(logs)
        .unify()
        .or(all_stats)
        .unify()
        .or(history)
        .unify()
        .or(events)
        .unify()
}

/// A request body of the JSON `shape` (as a person would write it); a
/// 400 that shows the shape when it is not.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("the body must be {shape}: {e}"),
        ))
    })
}

/// `logs/{stream}?lines=N` (JSON) or `?follow=true[&lines=N]` (SSE: the last
/// N lines, 0 unless given, then every new one). Each event's data is a JSON
/// array of lines, oldest first: a burst of lines comes as one event.
fn logs(state: &State, name: &str, stream: &str, query: &Query) -> Response {
    let stream: LogStream = match stream.parse() {
        Ok(s) => s,
        Err(e) => return not_found(e.to_string()),
    };
    let follow = match query.get("follow").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("`follow` must be true or false, not `{other}`"),
            );
        }
    };
    let lines = match query.get("lines").map(|n| n.parse::<usize>()) {
        None if follow => 0,
        None => DEFAULT_LINES,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "`lines` must be a whole number",
            );
        }
    };
    let sup = &state.supervisor.exposed();
    if !follow {
        return sup
            .logs(name, stream, lines)
            .map_or_else(from_core, |l| ok(&l));
    }
    // Subscribe before taking the tail: a line written in between may come
    // twice, but none is missed.
    let feed = match state.hubs.follow(sup, name, stream) {
        Ok(feed) => feed,
        Err(e) => return from_core(e),
    };
    let backlog = match lines {
        0 => Vec::new(),
        n => sup.logs(name, stream, n).unwrap_or_default(),
    };
    let backlog = (!backlog.is_empty())
        .then(|| Event::default().data(serde_json::to_string(&backlog).unwrap_or_default()));
    let feed = feed.map(|delivery| match delivery {
        Delivery::Lines(batch) => Event::default().data(batch.json.clone()),
        Delivery::Gap(n) => gap(n),
    });
    sse(state, futures_util::stream::iter(backlog).chain(feed))
}

/// Every state change, as `data: <event JSON>`.
fn events(state: &State) -> Response {
    let feed = coalesced(state.supervisor.events()).map(|item| match item {
        Feed::Item(event) => {
            Event::default().data(serde_json::to_string(&event).unwrap_or_default())
        }
        Feed::Gap(n) => gap(n),
    });
    sse(state, feed)
}

/// `GET /api/v1/stats`: CPU and memory of every program with Web = true,
/// by name, from one scan (what the dashboard polls).
async fn all_stats(state: &State) -> Response {
    // Someone watches: the history is sampled meanwhile.
    state.supervisor.want_history();
    let stats: BTreeMap<String, zist_core::ProcessStats> = state
        .supervisor
        .exposed()
        .stats_all()
        .await
        .into_iter()
        .filter_map(|(info, stats)| Some((info.name, stats?)))
        .collect();
    ok(&stats)
}

/// `event: gap` with the number of items the client missed.
fn gap(n: u64) -> Event {
    Event::default()
        .event("gap")
        .data(json!({ "skipped": n }).to_string())
}

fn sse(state: &State, events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let events = events.map(Ok::<_, Infallible>);
    let events = warp::sse::keep_alive()
        .interval(state.heartbeat)
        .stream(events);
    let events = futures_util::TryStreamExt::into_stream(events);
    warp::sse::reply(sync_wrapper::SyncStream::new(events)).into_response()
}
