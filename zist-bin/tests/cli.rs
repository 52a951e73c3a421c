//! zistcl's everyday commands (docs/reference.md §12): several programs
//! and globs at once, `pid`, `signal`, `info`, `add`, `remove`, `tail`,
//! `all tail -f`, "did you mean", completions and the man page.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use zist_core::testing::eventually_blocking;

use crate::daemon::{Setup, TOKEN, ZISTCL, Zistd, program};

/// A zistcl that runs on (`tail -f`): its stdout lines as they come; killed
/// on drop if still running.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(zistd: &Zistd, args: &[&str]) -> Self {
        let mut child = Command::new(ZISTCL)
            .args([zistd.rpc.as_str(), TOKEN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line from zistcl within 10 s")
    }

    /// Its exit code and stderr, once it ends on its own (within 10 s).
    fn ended(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                let _ = self
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr);
                return (status.code(), stderr);
            }
            assert!(Instant::now() < deadline, "zistcl did not end within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn state(zistd: &mut Zistd, name: &str) -> Value {
    zistd.info(name)["state"].clone()
}

#[test]
fn several_names_and_globs_act_on_each_and_typos_get_the_nearest_word() {
    let setup = Setup::new("");
    let sleep = Path::new("/bin/sleep");
    setup.write_config(
        &(program("web1", sleep, "Args = \"331\"")
            + &program("web2", sleep, "Args = \"332\"")
            + &program("db", sleep, "Args = \"333\"")),
    );
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "every program to run", || {
        zistd.list().iter().all(|i| i["state"] == "running")
    });
    let stopped = zistd.cl(&["web*", "stop"]);
    assert_eq!(stopped.code, 0, "{stopped:?}");
    assert!(stopped.stdout.contains("web1") && stopped.stdout.contains("web2"));
    assert_eq!(state(&mut zistd, "web1"), "stopped");
    assert_eq!(state(&mut zistd, "web2"), "stopped");
    assert_eq!(state(&mut zistd, "db"), "running");
    let started = zistd.cl(&["web1", "web2", "start"]);
    assert_eq!(started.code, 0, "{started:?}");
    eventually_blocking(Duration::from_secs(10), "web1 and web2 to run", || {
        zistd.list().iter().all(|i| i["state"] == "running")
    });
    // A program name that is not one: refused (1), with the nearest name;
    // the others named are still done.
    let typo = zistd.cl(&["wbe1", "db", "stop"]);
    assert_eq!(typo.code, 1, "{typo:?}");
    assert!(typo.stderr.contains("did you mean `web1`?"), "{typo:?}");
    assert_eq!(state(&mut zistd, "db"), "stopped");
    // A command that is not one: a usage error (2), with the nearest one.
    let action = zistd.cl(&["web1", "strat"]);
    assert_eq!(action.code, 2, "{action:?}");
    assert!(
        action.stderr.contains("did you mean `web1 start`?"),
        "{action:?}"
    );
    let command = zistd.cl(&["stauts"]);
    assert_eq!(command.code, 2, "{command:?}");
    assert!(
        command.stderr.contains("did you mean `status`?"),
        "{command:?}"
    );
    let none = zistd.cl(&["cache*", "stop"]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(
        none.stderr.contains("no program matches `cache*`"),
        "{none:?}"
    );
}

#[test]
fn pid_signal_info_add_and_remove() {
    let setup = Setup::new("");
    let hup = setup.script(
        "hup.sh",
        "trap 'echo got HUP' HUP\nwhile true; do sleep 0.05; done",
    );
    setup.write_config(
        &(program("hup", &hup, "")
            + &program("idle", Path::new("/bin/sleep"), "Autostart = false")),
    );
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "hup to run", || {
        state(&mut zistd, "hup") == "running"
    });
    let pid = zistd.cl(&["hup", "pid"]);
    assert_eq!(pid.code, 0, "{pid:?}");
    assert_eq!(pid.stdout.trim(), zistd.info("hup")["pid"].to_string());
    let none = zistd.cl(&["idle", "pid"]);
    assert_eq!((none.code, none.stdout.as_str()), (1, ""), "{none:?}");
    assert!(
        none.stderr.contains("idle has no process (stopped)"),
        "{none:?}"
    );
    let signalled = zistd.cl(&["hup", "signal", "HUP"]);
    assert_eq!(signalled.code, 0, "{signalled:?}");
    eventually_blocking(Duration::from_secs(10), "the program to get SIGHUP", || {
        zistd.cl(&["hup", "stdout"]).stdout.contains("got HUP")
    });
    let info = zistd.cl(&["hup", "info"]);
    assert_eq!(info.code, 0, "{info:?}");
    let out_log = setup.path("logs/hup.out.log");
    for line in [
        "name         hup".to_owned(),
        "state        running".to_owned(),
        format!("stdout_log   {} (", out_log.display()),
        "message      -".to_owned(),
    ] {
        assert!(
            info.stdout.lines().any(|l| l.starts_with(&line)),
            "no {line:?} in\n{}",
            info.stdout
        );
    }
    let json: Value = serde_json::from_str(&zistd.cl(&["--json", "hup", "info"]).stdout).unwrap();
    assert_eq!(json["log"]["stdout"]["file"], out_log.display().to_string());
    // A program file added at run time, then removed.
    let file = setup.path("extra.toml");
    std::fs::write(
        &file,
        "Name = \"extra\"\nPath = \"/bin/sleep\"\nArgs = \"334\"\n",
    )
    .unwrap();
    let added = zistd.cl(&["add", file.to_str().unwrap()]);
    assert_eq!(added.code, 0, "{added:?}");
    eventually_blocking(Duration::from_secs(10), "extra to run", || {
        zistd
            .list()
            .iter()
            .any(|i| i["name"] == "extra" && i["state"] == "running")
    });
    assert_eq!(zistd.cl(&["extra", "stop"]).code, 0);
    let removed = zistd.cl(&["extra", "remove"]);
    assert_eq!(removed.code, 0, "{removed:?}");
    assert!(zistd.list().iter().all(|i| i["name"] != "extra"));
    let bad = zistd.cl(&["add", setup.path("missing.toml").to_str().unwrap()]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("cannot read"), "{bad:?}");
}

/// A program that prints 1, 2, 3, ... one line every 20 ms.
fn counter(setup: &Setup, name: &str) -> String {
    let script = setup.script(
        &format!("{name}.sh"),
        "i=0\nwhile true; do i=$((i+1)); echo $i; sleep 0.02; done",
    );
    program(name, &script, "")
}

fn number(line: &str) -> u64 {
    line.parse()
        .unwrap_or_else(|_| panic!("not a counter line: {line:?}"))
}

#[test]
fn tail_prints_the_last_lines_then_follows_until_the_program_stops() {
    let setup = Setup::new("");
    setup.write_config(&counter(&setup, "count"));
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "20 lines", || {
        zistd.cl(&["count", "stdout"]).stdout.lines().count() >= 20
    });
    let last = zistd.cl(&["count", "tail", "-n", "5"]);
    assert_eq!(last.code, 0, "{last:?}");
    let numbers: Vec<u64> = last.stdout.lines().map(number).collect();
    assert_eq!(numbers.len(), 5, "{last:?}");
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    // History, then live: every number once, in order, across the seam.
    let mut tail = Running::start(&zistd, &["count", "tail", "-n", "3", "-f"]);
    let mut seen: Vec<u64> = (0..40).map(|_| number(&tail.line())).collect();
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    assert_eq!(zistd.cl(&["count", "stop"]).code, 0);
    let (code, stderr) = tail.ended();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("count has stopped"), "{stderr}");
    seen.extend(tail.lines.try_iter().map(|l| number(&l)));
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    // A program already stopped: its last lines, and the word at once.
    let mut again = Running::start(&zistd, &["count", "tail", "-f"]);
    let (code, stderr) = again.ended();
    assert_eq!(code, Some(0), "{stderr}");
    let after: Vec<String> = again.lines.try_iter().collect();
    assert_eq!(after.len(), 10, "{after:?}");
}

#[test]
fn all_tail_follows_every_program_as_name_and_line() {
    let setup = Setup::new("");
    setup.write_config(&(counter(&setup, "one") + &counter(&setup, "two")));
    let zistd = setup.start();
    let all = Running::start(&zistd, &["all", "tail", "-f"]);
    let mut last: std::collections::BTreeMap<String, u64> = Default::default();
    while last.len() < 2 || last.values().any(|&n| n < 10) {
        let line = all.line();
        let (name, n) = line.split_once(" | ").unwrap_or_else(|| panic!("{line:?}"));
        let n = number(n);
        if let Some(before) = last.insert(name.to_owned(), n) {
            assert_eq!(n, before + 1, "{name} skipped a line");
        }
    }
    assert_eq!(last.keys().collect::<Vec<_>>(), ["one", "two"]);
}

#[test]
fn completions_and_the_man_page_need_no_zistd() {
    for (shell, mark) in [
        ("bash", "complete"),
        ("zsh", "#compdef zistcl"),
        ("fish", "complete -c zistcl"),
    ] {
        let out = Command::new(ZISTCL)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(mark),
            "{shell}"
        );
    }
    let man = Command::new(ZISTCL).arg("manpage").output().unwrap();
    assert!(man.status.success());
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH zistcl 1"));
    let bad = Command::new(ZISTCL)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn all_says_why_a_program_does_not_run() {
    let setup = Setup::new("");
    setup.write_config(
        &(program("fine", Path::new("/bin/sleep"), "Args = \"335\"")
            + &program("broken", Path::new("/nonexistent/zist-test"), "")),
    );
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "broken to be fatal", || {
        state(&mut zistd, "broken") == "fatal"
    });
    let message = zistd.info("broken")["message"].as_str().unwrap().to_owned();
    let all = zistd.cl(&["all"]);
    assert!(
        all.stdout.lines().next().unwrap().ends_with("  MESSAGE"),
        "{all:?}"
    );
    // Not a terminal: the whole message, on the program's row only.
    let row = all
        .stdout
        .lines()
        .find(|l| l.starts_with("broken"))
        .unwrap();
    assert!(row.ends_with(&format!("  {message}")), "{row}");
    let fine = all.stdout.lines().find(|l| l.starts_with("fine")).unwrap();
    assert!(fine.trim_end().ends_with('0'), "{fine}");
}

/// A tmux server of the test's own (its socket in the test's folder),
/// killed with everything in it on drop.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn new(setup: &Setup) -> Self {
        Self {
            socket: setup.path("tmux.sock"),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux (apt install tmux)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `script` in an 80x24 window named `name`.
    fn window(&self, name: &str, script: &Path) {
        let command = script.display().to_string();
        if self.socket.exists() {
            self.run(&["new-window", "-d", "-n", name, &command]);
        } else {
            self.run(&[
                "new-session",
                "-d",
                "-s",
                "t",
                "-n",
                name,
                "-x",
                "80",
                "-y",
                "24",
                &command,
            ]);
        }
    }

    fn screen(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", &format!("t:{name}")])
    }

    /// Waits until `name`'s screen holds every one of `wanted`.
    fn wait_for(&self, name: &str, wanted: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen(name);
            if wanted.iter().all(|w| screen.contains(w)) {
                return screen;
            }
            assert!(Instant::now() < deadline, "no {wanted:?} on\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[test]
fn top_in_a_terminal_shows_programs_and_gives_the_terminal_back() {
    let setup = Setup::new("");
    let sleep = Path::new("/bin/sleep");
    setup.write_config(
        &(program("alpha", sleep, "Args = \"336\"") + &program("beta", sleep, "Args = \"337\"")),
    );
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "every program to run", || {
        zistd.list().iter().all(|i| i["state"] == "running")
    });
    // After top: its exit code, and whether the terminal is back in
    // canonical mode (`icanon`; raw mode leaves `-icanon`).
    let script = setup.script(
        "top.sh",
        &format!(
            "{ZISTCL} {} {TOKEN} top\necho exit=$?\nstty -a | grep -o -- '-*icanon' | sed 's/^/mode=/'\nexec sleep 60",
            zistd.rpc
        ),
    );
    let tmux = Tmux::new(&setup);
    tmux.window("q", &script);
    let screen = tmux.wait_for(
        "q",
        &["zist top: 2 programs, 2 running", "alpha", "beta", "q quit"],
    );
    assert!(screen.contains("running"), "{screen}");
    tmux.run(&["send-keys", "-t", "t:q", "q"]);
    let after = tmux.wait_for("q", &["exit=0", "mode="]);
    assert!(
        after.contains("mode=icanon"),
        "the terminal was left raw:\n{after}"
    );
    assert!(
        !after.contains("zist top"),
        "the view is still on screen:\n{after}"
    );
    // SIGTERM (a closed ssh session sends SIGHUP; both end it the same way).
    tmux.window("term", &script);
    tmux.wait_for("term", &["zist top: 2 programs"]);
    let shell: i32 = tmux
        .run(&["display-message", "-p", "-t", "t:term", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let top: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(top),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let after = tmux.wait_for("term", &["exit=0", "mode="]);
    assert!(
        after.contains("mode=icanon"),
        "the terminal was left raw:\n{after}"
    );
}
