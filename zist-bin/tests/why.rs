//! Saying why (docs/reference.md §3.3): `message`, the last exit kept
//! across restarts, and a daemon log line for every change nobody asked for.

use std::time::Duration;

use serde_json::json;
use zist_core::testing::eventually_blocking;

use crate::daemon::{Setup, program};

#[test]
fn a_failing_program_says_why_in_its_info_the_cli_and_the_daemon_log() {
    let setup = Setup::new("");
    let fails = setup.script("fails.sh", "exit 3");
    let once = setup.script(
        "once.sh",
        "if [ -e \"$0.ran\" ]; then exec sleep 320; fi\ntouch \"$0.ran\"\nsleep 0.3\nexit 4",
    );
    setup.write_config(
        &(program("fails", &fails, "MaxRestarts = 1\nRestartDelay = \"0s\"")
            + &program("once", &once, "RestartDelay = \"0s\"")),
    );
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "fails to turn fatal", || {
        zistd.info("fails")["state"] == "fatal"
    });
    let info = zistd.info("fails");
    let message = info["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("2 times in a row") && message.contains("exit status 3"),
        "{info}"
    );
    assert_eq!(info["exit_code"], 3, "{info}");
    let status = zistd.cl(&["fails", "status"]);
    assert!(status.stdout.contains("exit status 3"), "{status:?}");

    // A crash after a good run: restarted, and the last exit is kept.
    eventually_blocking(Duration::from_secs(10), "once to run again", || {
        let info = zistd.info("once");
        info["state"] == "running" && info["restarts"] == 1
    });
    let info = zistd.info("once");
    assert_eq!(info["exit_code"], 4, "the last exit stays: {info}");
    assert!(info["message"].is_null(), "{info}");

    let log = zistd.rpc("daemon.log", json!({"lines": 1000}));
    let log = log["result"].as_array().unwrap();
    let has = |needle: &str| {
        log.iter()
            .any(|l| l.as_str().unwrap_or("").contains(needle))
    };
    assert!(has("backoff: fails ("), "{log:?}");
    assert!(has("fatal: fails ("), "{log:?}");
    assert!(has("exit status 4; not expected, restarting"), "{log:?}");
}
