//! The dashboard in a real browser: headless Chromium driven over
//! chromedriver (Debian's chromium and chromium-driver; `.ci/run` installs them).

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use zist_core::ProcessState;

use crate::support::{Rig, TOKEN};

const LIMIT: Duration = Duration::from_secs(20);

/// The text of the first element `css` selects, once `ready` holds for it.
async fn wait_text(client: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if ready(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` never got there; last text: {last:?}");
}

/// [`wait_text`] on the text content, for rows off screen (which the page
/// does not render, by design).
async fn wait_content(client: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(Some(text)) = element.prop("textContent").await
        {
            if ready(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` never got there; last text: {last:?}");
}

/// Clicks the first element `css` selects.
async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
}

fn last_tick(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_programs_stops_one_and_shows_live_logs() {
    let rig = Rig::new().await;
    rig.add(
        "ticker",
        "i=0; while :; do i=$((i+1)); echo \"tick $i\"; sleep 0.2; done",
        true,
    )
    .await;
    rig.add("svc", "sleep 300", true).await;
    rig.add(
        "two",
        "echo to-out; echo to-err >&2; trap 'echo got USR1' USR1; while :; do sleep 0.05; done",
        true,
    )
    .await;
    for i in 0..18 {
        rig.add(&format!("worker-{i:02}"), "sleep 300", true).await;
    }
    let mut oneshot =
        zist_core::ProgramSpec::new(zist_core::ProgramName::new("oneshot").unwrap(), "/bin/sh")
            .args(["-c", "exit 0"]);
    oneshot.restart = zist_core::RestartPolicy::Never;
    rig.sup.register(oneshot).await.unwrap();
    let browser = zist_benches::browser::Browser::start().await;
    let client = &browser.client;
    client
        .goto(&format!("http://{}/", rig.addr))
        .await
        .expect("the page did not load");

    // It asks for the token once.
    let field = client
        .wait()
        .at_most(LIMIT)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    field.send_keys(TOKEN).await.unwrap();
    click(client, "#login button[type=submit]").await;

    // It lists the programs, and the states come live.
    wait_text(client, r#".row[data-name="svc"] .state"#, |t| {
        t == "running"
    })
    .await;
    let rows = client.find_all(Locator::Css("#rows .row")).await.unwrap();
    assert_eq!(rows.len(), 22);
    // A one-shot that did its work: grey, not red; no process, no figures.
    wait_text(client, r#".row[data-name="oneshot"] .state"#, |t| {
        t == "exited"
    })
    .await;
    let look = client
        .execute(
            "const r = document.querySelector('.row[data-name=\"oneshot\"]'); \
             return [r.querySelector('.state').className, \
                     r.querySelector('.cpu').textContent, r.querySelector('.mem').textContent]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(look, serde_json::json!(["state state-exited-ok", "", ""]));
    let pid = rig.sup.info("svc").unwrap().pid.unwrap();
    wait_text(client, r#".row[data-name="svc"] .pid"#, |t| {
        t == pid.to_string()
    })
    .await;
    wait_text(client, r#".row[data-name="svc"] .mem"#, |t| {
        t.ends_with("iB")
    })
    .await;

    // Stop: the row follows.
    click(
        client,
        r#".row[data-name="svc"] button[data-action="stop"]"#,
    )
    .await;
    wait_text(client, r#".row[data-name="svc"] .state"#, |t| {
        t == "stopped"
    })
    .await;
    assert_eq!(rig.sup.info("svc").unwrap().state, ProcessState::Stopped);

    // The state filter: "not running" leaves svc alone; a text narrows too.
    let shown = |filter: &'static str, text: &'static str| {
        let script = format!(
            "const s = document.getElementById('state-filter'); s.value = '{filter}'; \
             s.dispatchEvent(new Event('change')); \
             const f = document.getElementById('filter'); f.value = '{text}'; \
             f.dispatchEvent(new Event('input')); \
             return [...document.querySelectorAll('#rows .row:not(.hidden)')].map((r) => r.dataset.name)"
        );
        async move { client.execute(&script, vec![]).await.unwrap() }
    };
    let mut down: Vec<String> = serde_json::from_value(shown("down", "").await).unwrap();
    down.sort();
    assert_eq!(down, ["oneshot", "svc"]);
    assert_eq!(shown("trouble", "").await, serde_json::json!([]));
    assert_eq!(
        shown("running", "worker-1").await.as_array().unwrap().len(),
        8
    );
    assert_eq!(shown("", "").await.as_array().unwrap().len(), 22);

    // The live log view: the tail, then new lines as they come.
    click(client, r#".row[data-name="ticker"] button.name"#).await;
    let first = last_tick(&wait_text(client, "#log-lines", |t| last_tick(t) > 0).await);
    let later = wait_text(client, "#log-lines", |t| last_tick(t) > first + 2).await;
    assert!(last_tick(&later) > first + 2);

    // Search narrows the lines in view.
    let js = |script: &'static str| async move { client.execute(script, vec![]).await.unwrap() };
    js(
        "const s = document.getElementById('log-search'); s.value = 'tick 1'; \
        s.dispatchEvent(new Event('input'))",
    )
    .await;
    let visible = js("return [...document.querySelectorAll('#log-lines > div:not(.hidden)')].map((l) => l.textContent)").await;
    let visible: Vec<String> = serde_json::from_value(visible).unwrap();
    assert!(
        !visible.is_empty() && visible.iter().all(|l| l.contains("tick 1")),
        "{visible:?}"
    );
    js(
        "const s = document.getElementById('log-search'); s.value = ''; \
        s.dispatchEvent(new Event('input'))",
    )
    .await;
    // Pause holds new lines back; resume shows them at once.
    click(client, "#log-pause").await;
    let held = last_tick(&wait_text(client, "#log-lines", |_| true).await);
    let ticker_last = || {
        rig.sup
            .logs("ticker", zist_core::LogStream::Stdout, 1)
            .unwrap()
            .first()
            .map_or(0, |l| last_tick(l))
    };
    let deadline = Instant::now() + LIMIT;
    while ticker_last() < held + 3 {
        assert!(Instant::now() < deadline, "the ticker stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved_on = ticker_last();
    assert_eq!(
        last_tick(&wait_text(client, "#log-lines", |_| true).await),
        held,
        "lines came while paused"
    );
    click(client, "#log-pause").await;
    wait_text(client, "#log-lines", |t| last_tick(t) >= moved_on).await;
    // Times: each line shows when it came.
    click(client, "#log-times").await;
    let before = js(
        "return getComputedStyle(document.querySelector('#log-lines > div'), '::before').content",
    )
    .await;
    assert!(before.as_str().is_some_and(|c| c.contains(':')), "{before}");
    // Both streams together, stderr's lines marked.
    click(client, r#".row[data-name="two"] button.name"#).await;
    click(client, r#"input[name="stream"][value="both"]"#).await;
    wait_content(client, "#log-lines", |t| {
        t.contains("to-out") && t.contains("to-err")
    })
    .await;
    let err = js(
        "return [...document.querySelectorAll('#log-lines > div.err')].map((l) => l.textContent)",
    )
    .await;
    assert_eq!(err, serde_json::json!(["to-err"]));
    click(client, r#"input[name="stream"][value="stdout"]"#).await;

    // The program panel: its info, log files and spec; a signal sent.
    click(client, r#".row[data-name="two"] .more"#).await;
    let path = wait_content(client, r#"#panel-fields dd[data-key="Path"]"#, |t| {
        !t.is_empty()
    })
    .await;
    assert_eq!(path, "/bin/sh");
    let out_log = wait_content(client, r#"#panel-fields dd[data-key="stdout log"]"#, |t| {
        !t.is_empty()
    })
    .await;
    assert!(
        out_log.contains("two.out.log") && out_log.contains("written"),
        "{out_log}"
    );
    js("document.getElementById('panel-signal').value = 'USR1'").await;
    click(client, "#panel-send").await;
    let deadline = Instant::now() + LIMIT;
    while !rig
        .sup
        .logs("two", zist_core::LogStream::Stdout, 10)
        .unwrap()
        .iter()
        .any(|l| l == "got USR1")
    {
        assert!(
            Instant::now() < deadline,
            "the panel's signal never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    click(client, "#panel-close").await;

    // A program with instances: a line above them scales it and restarts
    // it rolling.
    let mut pool =
        zist_core::ProgramSpec::new(zist_core::ProgramName::new("pool").unwrap(), "/bin/sleep")
            .args(["300"]);
    pool.instances = Some(2);
    pool.start_secs = Duration::from_millis(50);
    rig.sup.register_each(pool).await.unwrap();
    wait_content(client, r#".group[data-group="pool"] .group-title"#, |t| {
        t == "pool · 2 instances"
    })
    .await;
    let count = client
        .find(Locator::Css(r#".group[data-group="pool"] input"#))
        .await
        .unwrap();
    count.clear().await.unwrap();
    count.send_keys("3").await.unwrap();
    click(
        client,
        r#".group[data-group="pool"] button[data-action="scale"]"#,
    )
    .await;
    wait_content(client, r#".row[data-name="pool:2"] .state"#, |t| {
        t == "running"
    })
    .await;
    wait_content(client, r#".group[data-group="pool"] .group-title"#, |t| {
        t == "pool · 3 instances"
    })
    .await;
    let pids = || {
        (0..3)
            .map(|i| rig.sup.info(&format!("pool:{i}")).unwrap().pid)
            .collect::<Vec<_>>()
    };
    let before = pids();
    click(
        client,
        r#".group[data-group="pool"] button[data-action="rolling-restart"]"#,
    )
    .await;
    let deadline = Instant::now() + LIMIT;
    while pids()
        .iter()
        .zip(&before)
        .any(|(now, was)| now == was || now.is_none())
    {
        assert!(
            Instant::now() < deadline,
            "the rolling restart never replaced {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The token is kept for the tab only.
    let storage = client
        .execute(
            "return [sessionStorage.getItem('zist-token'), localStorage.length, document.cookie]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(storage, serde_json::json!([TOKEN, 0, ""]));

    // The charts draw the history zistd keeps, with their scales written.
    let deadline = Instant::now() + LIMIT;
    loop {
        let drawn = client
            .execute(
                "const p = programs.get('svc'); \
                 return p && p.history ? p.history.cpu_percent.filter((c) => c != null).length : 0",
                vec![],
            )
            .await
            .unwrap();
        if drawn.as_u64().is_some_and(|n| n > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no history reached the page");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    client.set_window_size(1400, 900).await.unwrap();
    browser.screenshot(&shots.join("dashboard-1400.png")).await;

    // A phone, 390 px wide: every action of a program is on screen and
    // its state is whole.
    client
        .execute("document.getElementById('logs-close').click()", vec![])
        .await
        .unwrap();
    client.set_window_size(390, 844).await.unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        let check = client
            .execute(
                "const row = document.querySelector('.row[data-name=\"worker-05\"]'); \
                 row.scrollIntoView({block: 'center'}); \
                 const width = document.documentElement.clientWidth; \
                 const state = row.querySelector('.state'); \
                 const buttons = [...row.querySelectorAll('.actions button')].map((b) => { \
                   const r = b.getBoundingClientRect(); \
                   const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2); \
                   return r.width > 0 && r.left >= 0 && r.right <= width && hit === b; }); \
                 return [width, buttons, state.scrollWidth <= state.clientWidth, state.textContent]",
                vec![],
            )
            .await
            .unwrap();
        if check[0].as_u64().is_some_and(|w| w <= 400)
            && check[1] == serde_json::json!([true, true, true, true, true])
            && check[2] == true
        {
            break;
        }
        assert!(Instant::now() < deadline, "at 390 px: {check}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.screenshot(&shots.join("dashboard-390.png")).await;
    browser.close().await;
}
