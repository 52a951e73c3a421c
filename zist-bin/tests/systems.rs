//! Systems of programs through zistd and zistcl (docs/reference.md §9):
//! order, readiness, instances, scale and rolling restarts as users run them.

use std::time::Duration;

use zist_core::testing::eventually_blocking;

use crate::daemon::{Setup, program};

#[test]
fn a_database_an_app_and_workers_start_in_order_and_the_workers_scale_and_roll() {
    let setup = Setup::new("");
    let db = setup.script(
        "db.sh",
        "while [ ! -e \"$0.go\" ]; do sleep 0.02; done\necho ready\nexec sleep 330",
    );
    setup.write_config(
        &(program("db", &db, "Ready = { Line = \"^ready$\" }")
            + &program(
                "app",
                std::path::Path::new("/bin/sleep"),
                "Args = \"331\"\nAfter = [\"db\"]",
            )
            + &program(
                "workers",
                std::path::Path::new("/bin/sleep"),
                "Args = \"332\"\nAfter = [\"app\"]\nInstances = 2",
            )),
    );
    let mut zistd = setup.start();
    let app = zistd.cl(&["app", "status"]);
    assert!(
        app.stdout.contains("waiting") && app.stdout.contains("waiting for db"),
        "{app:?}"
    );
    let db_info = zistd.info("db");
    assert_eq!(db_info["state"], "starting", "{db_info}");
    assert_eq!(
        db_info["message"],
        "starting: no line matched /^ready$/ yet"
    );
    std::fs::write(format!("{}.go", db.display()), "").unwrap();
    eventually_blocking(Duration::from_secs(10), "every program to run", || {
        let list = zistd.list();
        list.len() == 4 && list.iter().all(|i| i["state"] == "running")
    });

    // One process is meant: the instances are named.
    let one = zistd.cl(&["workers", "status"]);
    assert_eq!(one.code, 1, "{one:?}");
    assert!(one.stderr.contains("workers:0, workers:1"), "{one:?}");

    let scaled = zistd.cl(&["workers", "scale", "3"]);
    assert_eq!(scaled.code, 0, "{scaled:?}");
    assert!(scaled.stdout.contains("workers:2"), "{scaled:?}");
    let before: Vec<i64> = (0..3)
        .map(|i| {
            let info = zistd.info(&format!("workers:{i}"));
            info["pid"].as_i64().unwrap_or(0)
        })
        .collect();
    let rolled = zistd.cl(&["--json", "workers", "restart", "--rolling"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    let rolled: Vec<serde_json::Value> = serde_json::from_str(&rolled.stdout).unwrap();
    assert_eq!(rolled.len(), 3);
    for (info, old) in rolled.iter().zip(&before) {
        assert_eq!(info["state"], "running", "{info}");
        assert_ne!(info["pid"].as_i64(), Some(*old), "{info}");
    }
    let bad = zistd.cl(&["workers", "scale", "many"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    let stopped = zistd.cl(&["workers", "stop"]);
    assert_eq!(stopped.code, 0, "{stopped:?}");
    assert_eq!(stopped.stdout.matches("stopped").count(), 3, "{stopped:?}");
}
