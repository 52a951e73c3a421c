//! Config loading: seed files, spellings, every error at once with file and line.

use std::time::Duration;

use zist_core::{Config, Protocol, RestartPolicy, Signal};

use crate::support::Dir;

const SEED_DAEMON: &str = r#"Confdir = "/etc/zist/conf.d"
Web = true
Protocol = "http"
HTTPPort = 7000
Token = "zis"
RPCPort = 9876
"#;

const SEED_PROGRAM: &str = r#"Name = "app1"
Path = "/path/to/app1"
Args = "-your -app -args"
Restart = true
Web = true
"#;

fn messages(e: &zist_core::ConfigErrors) -> Vec<String> {
    e.0.iter().map(ToString::to_string).collect()
}

#[test]
fn the_seed_files_load_unchanged() {
    let dir = Dir::new();
    let daemon = SEED_DAEMON.replace(
        "/etc/zist/conf.d",
        &dir.join("conf.d").display().to_string(),
    );
    let file = dir.write("conf.toml", &daemon);
    dir.write("conf.d/app1.toml", SEED_PROGRAM);
    let config = Config::load(&file).expect("seed config loads");
    assert_eq!(config.daemon.http_port, 7000);
    assert_eq!(config.daemon.rpc_port, 9876);
    assert_eq!(config.daemon.token.as_deref(), Some("zis"));
    assert_eq!(config.daemon.protocol, Protocol::Http);
    assert_eq!(config.daemon.bind, "127.0.0.1");
    let app = &config.programs[0];
    assert_eq!(app.name.as_str(), "app1");
    assert_eq!(app.args, ["-your", "-app", "-args"]);
    assert_eq!(app.restart, RestartPolicy::Always);
    assert_eq!(app.logfile, Some(dir.join("logs/app1.out.log")));
    // The executable does not exist: a warning that names it, not an error.
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let w = config.warnings[0].to_string();
    assert!(
        w.contains("app1.toml:2:") && w.contains("/path/to/app1"),
        "{w}"
    );

    // The seed daemon file exactly as shipped, with its absolute Confdir, loads too.
    let exact = dir.write("exact.toml", SEED_DAEMON);
    let config = Config::load(&exact).expect("seed daemon file loads");
    assert_eq!(
        config.daemon.confdir,
        std::path::Path::new("/etc/zist/conf.d")
    );
}

#[test]
fn lowercase_keys_arrays_units_and_relative_paths() {
    let dir = Dir::new();
    dir.script("bin/app", "exit 0");
    let file = dir.write(
        "conf.toml",
        r#"token = "t"
httpport = 0
logdir = "var/log"

[[Program]]
name = "one"
path = "bin/app"
args = ["a b", "c"]
startsecs = "500ms"
restartdelay = 2
stoptimeout = "2m"
logmaxbytes = "1KiB"
stopsignal = "INT"
restart = "on-failure"
env = { A = "1", B = 2 }

[[Program]]
Name = "two"
Path = "sh"
Args = "-c 'echo \"hi there\"'"
Restart = false
Workingdir = "work"
LogMaxBytes = 4096
"#,
    );
    let config = Config::load(&file).unwrap();
    assert_eq!(config.daemon.http_port, 0);
    let one = &config.programs[0];
    assert_eq!(one.path, dir.join("bin/app"));
    assert_eq!(one.args, ["a b", "c"]);
    assert_eq!(one.start_secs, Duration::from_millis(500));
    assert_eq!(one.restart_delay, Duration::from_secs(2));
    assert_eq!(one.stop_timeout, Duration::from_secs(120));
    assert_eq!(one.log_max_bytes, 1024);
    assert_eq!(one.stop_signal, Signal::SIGINT);
    assert_eq!(one.restart, RestartPolicy::OnFailure);
    assert_eq!(one.env.get("B").map(String::as_str), Some("2"));
    assert_eq!(one.logfile, Some(dir.join("var/log/one.out.log")));
    let two = &config.programs[1];
    assert_eq!(
        two.path,
        std::path::Path::new("sh"),
        "bare names stay for PATH lookup"
    );
    assert_eq!(two.args, ["-c", "echo \"hi there\""]);
    assert_eq!(two.restart, RestartPolicy::Never);
    assert_eq!(two.workingdir, Some(dir.join("work")));
    assert_eq!(two.log_max_bytes, 4096);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn every_problem_is_reported_at_once_with_file_and_line() {
    let dir = Dir::new();
    let file = dir.write(
        "conf.toml",
        r#"Token = "t"
HTTPPrt = 7000
Web = "yes"

[[Program]]
Name = "dup"
Path = "/bin/true"

[[Program]]
Name = "broken"
Path = "/bin/true"
StartSecs = "soon"
Restart = "sometimes"
"#,
    );
    dir.write("conf.d/a.toml", "Name = \"dup\"\nPath = \"/bin/true\"\n");
    dir.write(
        "conf.d/b.toml",
        "Name = \"bad name\"\nPath = \"/bin/true\"\nStopSignal = \"NOPE\"\n",
    );
    dir.write(
        "conf.d/c.toml",
        "Name = \"c\"\nPath = \"/bin/true\"\nArgs = [\"x\"\n",
    );
    dir.write(
        "conf.d/d.toml",
        "Name = \"all\"\nPath = \"/bin/true\"\nAutoStart = true\n",
    );
    let errors = Config::load(&file).unwrap_err();
    let all = messages(&errors);
    let text = all.join("\n");
    let expect = [
        ("conf.toml:2:", "`HTTPPrt`", "`HTTPPort`"),
        ("conf.toml:3:", "`Web`", "true or false"),
        ("conf.toml:12:", "`StartSecs`", "\"10s\""),
        ("conf.toml:13:", "`Restart`", "on-failure"),
        ("a.toml:1:", "`dup`", "conf.toml:6"),
        ("b.toml:1:", "bad name", "letters, digits"),
        ("b.toml:3:", "StopSignal", "\"TERM\""),
        ("c.toml:3:", "TOML syntax error", ""),
        ("d.toml:1:", "\"all\"", "reserved"),
        ("d.toml:3:", "`AutoStart`", "`Autostart`"),
    ];
    for (place, what, hint) in expect {
        assert!(
            all.iter()
                .any(|m| m.contains(place) && m.contains(what) && m.contains(hint)),
            "no error at {place} about {what} with {hint:?} in:\n{text}"
        );
    }
    assert_eq!(all.len(), expect.len(), "{text}");
}

#[test]
fn a_missing_file_and_a_missing_name_are_clear_errors() {
    let dir = Dir::new();
    let err = Config::load(&dir.join("nope.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.toml") && err.contains("cannot read"),
        "{err}"
    );
    let file = dir.write("conf.toml", "[[Program]]\nPath = \"/bin/true\"\n");
    let err = Config::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("conf.toml:1:") && err.contains("no `Name`"),
        "{err}"
    );
}

#[test]
fn no_input_makes_loading_panic() {
    // Truncations and byte flips of a valid config, and odd values: each
    // must load or give errors, never panic.
    let dir = Dir::new();
    let base = r#"Token = "t"
HTTPPort = 70000
RPCPort = -1
[[Program]]
Name = "x"
Path = "/bin/true"
Args = ["a", 1]
Env = { A = [1] }
LogMaxBytes = "9999999999999999999999GB"
StartSecs = 1e300
MaxRestarts = 99999999999999999999
Program = 3
"#;
    let mut inputs: Vec<String> = (0..base.len()).map(|n| base[..n].to_owned()).collect();
    let bytes = base.as_bytes();
    for i in (0..bytes.len()).step_by(3) {
        let mut b = bytes.to_vec();
        b[i] = b"=[]\"{}\n#x."[i % 10];
        inputs.push(String::from_utf8_lossy(&b).into_owned());
    }
    for (i, input) in inputs.iter().enumerate() {
        let file = dir.write(&format!("f{i}.toml"), input);
        let _ = Config::load(&file);
    }
}
