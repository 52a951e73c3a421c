//! The web dashboard at `/`: one page and its script and style, compiled
//! into the binary (no CDN, no files to install). The page holds no data:
//! the script asks for the token and calls API v1 with it.

use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

const PAGE: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");
const ICON: &str = include_str!("../assets/favicon.svg");

/// Only the page's own script and style may run or load; it talks to this
/// server only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let reply = warp::reply::with_header(body, "content-type", content_type);
    let reply = warp::reply::with_header(reply, "content-security-policy", POLICY);
    let reply = warp::reply::with_header(reply, "x-content-type-options", "nosniff");
    let reply = warp::reply::with_header(reply, "referrer-policy", "no-referrer");
    warp::reply::with_header(reply, "cache-control", "no-cache").into_response()
}

/// `GET /` (and `HEAD /`, which monitors and load balancers send),
/// `/dashboard.js`, `/dashboard.css`, and the icon at `/favicon.ico`
/// (where browsers look for it first; an SVG) and `/favicon.svg`.
pub(crate) fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let page = warp::path::end()
        .and(warp::get().or(warp::head()).unify())
        .map(|| asset(PAGE, "text/html; charset=utf-8"));
    let icon = warp::path!("favicon.ico")
        .or(warp::path!("favicon.svg"))
        .unify()
        .and(warp::get().or(warp::head()).unify())
        .map(|| asset(ICON, "image/svg+xml"));
    let script = warp::path!("dashboard.js")
        .and(warp::get())
        .map(|| asset(SCRIPT, "text/javascript; charset=utf-8"));
    let style = warp::path!("dashboard.css")
        .and(warp::get())
        .map(|| asset(STYLE, "text/css; charset=utf-8"));
    page.or(script).unify().or(style).unify().or(icon).unify()
}
