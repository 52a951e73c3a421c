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
    assert_eq!(config.daemon.token, "zis");
    assert_eq!(config.daemon.protocol, Protocol::Http);
    assert_eq!(config.daemon.bind.to_string(), "127.0.0.1");
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
    std::fs::create_dir_all(dir.join("work")).unwrap();
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

/// A config with one program whose extra keys are `keys`.
fn with_program(dir: &Dir, keys: &str) -> std::path::PathBuf {
    dir.write(
        "conf.toml",
        &format!("Token = \"t\"\n[[Program]]\nName = \"p\"\nPath = \"/bin/sleep\"\n{keys}\n"),
    )
}

#[test]
fn durations_and_sizes_out_of_range_are_errors_that_name_key_line_and_range() {
    let dir = Dir::new();
    for (keys, key, range) in [
        ("StartSecs = 18446744073709551615", "StartSecs", "0s to 24h"),
        ("StartSecs = 1e19", "StartSecs", "0s to 24h"),
        ("StartSecs = \"25h\"", "StartSecs", "0s to 24h"),
        (
            "StopTimeout = 9223372036854775807",
            "StopTimeout",
            "0s to 24h",
        ),
        (
            "RestartDelay = 18446744073709551616",
            "RestartDelay",
            "0s to 24h",
        ),
        (
            "RestartDelay = 340282366920938463463374607431768211456",
            "RestartDelay",
            "0s to 24h",
        ),
        (
            "StopTimeout = \"18446744073709551615s\"",
            "StopTimeout",
            "0s to 24h",
        ),
        (
            "StopTimeout = \"18446744073709551615ms\"",
            "StopTimeout",
            "0s to 24h",
        ),
        (
            "LogMaxBytes = \"9999999999999999999999GB\"",
            "LogMaxBytes",
            "1TiB",
        ),
        ("LogMaxBytes = 18446744073709551616", "LogMaxBytes", "1TiB"),
        ("LogBackups = 4000000000", "LogBackups", "0 to 1000"),
        (
            "MaxRestarts = 99999999999999999999",
            "MaxRestarts",
            "0 to 4294967295",
        ),
    ] {
        let file = with_program(&dir, keys);
        let errors = Config::load(&file).expect_err(keys);
        let all = messages(&errors);
        assert_eq!(all.len(), 1, "{keys}: {all:?}");
        assert!(
            all[0].contains("conf.toml:5:") && all[0].contains(key) && all[0].contains(range),
            "{keys}: {}",
            all[0]
        );
    }
    // The limits themselves are fine.
    let file = with_program(
        &dir,
        "StartSecs = \"24h\"\nStopTimeout = 86400\nLogBackups = 1000",
    );
    Config::load(&file).unwrap();
}

#[test]
fn empty_paths_and_bad_env_keys_are_errors() {
    let dir = Dir::new();
    let file = with_program(
        &dir,
        "ErrLogfile = \"\"\nLogfile = \"\"\nWorkingdir = \"\"\nUser = \"\"\nEnv = { \"\" = \"x\", \"A=B\" = \"y\", OK = \"z\" }",
    );
    let text = messages(&Config::load(&file).unwrap_err()).join("\n");
    for what in [
        "`ErrLogfile` is empty",
        "`Logfile` is empty",
        "`Workingdir` is empty",
        "`User` is empty",
        "`Env` key \"\" is empty",
        "`Env` key \"A=B\" contains `=`",
    ] {
        assert!(text.contains(what), "no error {what:?} in:\n{text}");
    }
    let daemon = dir.write("d.toml", "Token = \"t\"\nLogDir = \"\"\n");
    let text = Config::load(&daemon).unwrap_err().to_string();
    assert!(
        text.contains("d.toml:2:") && text.contains("`LogDir` is empty"),
        "{text}"
    );
}

#[test]
fn a_daemon_file_without_a_token_or_with_a_bad_bind_is_refused() {
    let dir = Dir::new();
    let file = dir.write("conf.toml", "Token = \"\"\nBind = \"localhost:80\"\n");
    let text = messages(&Config::load(&file).unwrap_err()).join("\n");
    assert!(
        text.contains("no Token") && text.contains("zistd generate"),
        "{text}"
    );
    assert!(
        text.contains("conf.toml:2:") && text.contains("`Bind`"),
        "{text}"
    );
    let https = dir.write("https.toml", "Token = \"t\"\nProtocol = \"https\"\n");
    let config = Config::load(&https).unwrap();
    let missing = config.daemon.tls_files(None, None).unwrap_err().to_string();
    assert!(missing.contains("CertFile and KeyFile"), "{missing}");
    let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
    assert_eq!(
        config.daemon.tls_files(Some(&cert), Some(&key)).unwrap(),
        Some((cert, key))
    );
}

#[test]
fn what_would_fail_at_start_is_a_warning_at_load() {
    let dir = Dir::new();
    let plain = dir.write("bin/plain", "#!/bin/sh\nexit 0\n");
    let noshebang = dir.script("bin/noshebang", "");
    std::fs::write(&noshebang, "echo no interpreter line\n").unwrap();
    let file = dir.write(
        "conf.toml",
        &format!(
            "Token = \"t\"\n[[Program]]\nName = \"plain\"\nPath = \"{}\"\n\
             [[Program]]\nName = \"nowhere\"\nPath = \"/bin/sleep\"\nWorkingdir = \"missing\"\n\
             [[Program]]\nName = \"ghost\"\nPath = \"/bin/sleep\"\nUser = \"nosuchuser-zist\"\n\
             [[Program]]\nName = \"root\"\nPath = \"/bin/sleep\"\nUser = \"0\"\n\
             [[Program]]\nName = \"text\"\nPath = \"{}\"\n",
            plain.display(),
            noshebang.display()
        ),
    );
    let config = Config::load(&file).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    let text = warnings.join("\n");
    assert!(
        text.contains("conf.toml:4:") && text.contains("not executable"),
        "{text}"
    );
    assert!(
        text.contains("conf.toml:8:") && text.contains("is not a folder"),
        "{text}"
    );
    assert!(
        text.contains("conf.toml:12:") && text.contains("nosuchuser-zist"),
        "{text}"
    );
    assert!(
        text.contains("conf.toml:19:") && text.contains("no #! line"),
        "{text}"
    );
    assert_eq!(warnings.len(), 4, "a numeric uid is a user: {text}");
}

#[tokio::test]
async fn process_add_checks_json_keys_by_the_same_rules_and_names_them() {
    let dir = Dir::new();
    let sup = crate::support::Sup::new(&dir);
    let err = sup
        .register_json(&serde_json::json!({
            "Name": "j", "Path": "/bin/sleep", "StartSecs": 1e19,
            "Env": {"A=B": "x"}, "Restart": "sometimes", "Nmae": 1
        }))
        .await
        .unwrap_err();
    let text = err.to_string();
    for what in [
        "process.add",
        "`StartSecs`",
        "0s to 24h",
        "`Env` key \"A=B\"",
        "`Restart`",
        "unknown key `Nmae`",
        "`Name`",
    ] {
        assert!(text.contains(what), "no {what:?} in:\n{text}");
    }
    assert!(
        !text.contains(":1:") && !text.contains(".toml"),
        "lines of a text nobody wrote:\n{text}"
    );
    assert!(matches!(err, zist_core::Error::Config(_)));
    let info = sup
        .register_json(&serde_json::json!({
            "Name": "ok", "Path": "/bin/sleep", "Args": ["300"], "StartSecs": 0.2,
            "Autostart": false, "Env": {"N": 3}
        }))
        .await
        .unwrap()
        .one()
        .unwrap();
    assert_eq!(info.state, zist_core::ProcessState::Stopped);
    assert_eq!(
        sup.spec("ok").unwrap().start_secs,
        Duration::from_millis(200)
    );
    let not_object = sup
        .register_json(&serde_json::json!(["x"]))
        .await
        .unwrap_err();
    assert!(
        not_object.to_string().contains("must be an object"),
        "{not_object}"
    );
}

/// A small deterministic generator, so a failing case can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// Values at and past every edge, as TOML text.
const EXTREMES: [&str; 30] = [
    "0",
    "-1",
    "1",
    "-9223372036854775808",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1e19",
    "-1e300",
    "1e308",
    "nan",
    "inf",
    "-0.0",
    "0.0000001",
    "\"\"",
    "\"0s\"",
    "\"-5s\"",
    "\"18446744073709551615s\"",
    "\"18446744073709551615ms\"",
    "\"1e400\"",
    "\"9999999999999999999999GB\"",
    "\"1.5.5MB\"",
    "\"\\u0000\"",
    "\"=\"",
    "true",
    "[]",
    "[1, \"a\"]",
    "{ \"\" = 1, \"a=b\" = [] }",
    "1979-05-27T07:32:00Z",
];

#[tokio::test]
async fn random_and_extreme_values_never_panic_the_loader_or_process_add() {
    let dir = Dir::new();
    let sup = crate::support::Sup::new(&dir);
    let mut rng = Rng(0x5eed_2026_1203);
    for case in 0..400 {
        let mut text = String::from(
            "Token = \"t\"\n[[Program]]\nName = \"p\"\nPath = \"/bin/sleep\"\nAutostart = false\n",
        );
        let mut json = serde_json::Map::new();
        json.insert("Name".into(), format!("j{case}").into());
        json.insert("Path".into(), "/bin/sleep".into());
        json.insert("Autostart".into(), false.into());
        for _ in 0..1 + rng.next() % 4 {
            let key = *rng.pick(zist_core::config::PROGRAM_KEYS);
            let value = *rng.pick(&EXTREMES);
            if !["Name", "Path", "Autostart"].contains(&key) {
                text.push_str(&format!("{key} = {value}\n"));
            }
            // The same value as JSON, where TOML reads it as one.
            if let Ok(parsed) = toml::from_str::<toml::Table>(&format!("v = {value}"))
                && let Ok(v) = serde_json::to_value(&parsed["v"])
            {
                json.insert(key.to_owned(), v);
            }
        }
        let file = dir.write(&format!("c{case}.toml"), &text);
        let _ = Config::load(&file);
        if let Ok(acted) = sup.register_json(&serde_json::Value::Object(json)).await {
            let name = acted.infos()[0].name.clone();
            let name = name.split(':').next().unwrap_or_default().to_owned();
            sup.remove(&name).await.unwrap();
        }
    }
    // Every key with every extreme value, one at a time.
    for &key in zist_core::config::PROGRAM_KEYS {
        for value in EXTREMES {
            let file = with_program(&dir, &format!("{key} = {value}"));
            let _ = Config::load(&file);
        }
    }
}

#[test]
fn ready_and_alive_checks_load_with_their_defaults_and_bad_ones_say_what_is_wrong() {
    let dir = Dir::new();
    let file = with_program(
        &dir,
        "Ready = { Tcp = \"127.0.0.1:5432\", Timeout = \"30s\" }\nAlive = { Http = \"http://127.0.0.1:8080/health\", Failures = 5 }",
    );
    let config = Config::load(&file).unwrap();
    let spec = &config.programs[0];
    let ready = spec.ready.as_ref().unwrap();
    assert_eq!(ready.probe, zist_core::Probe::Tcp("127.0.0.1:5432".into()));
    assert_eq!(
        (ready.interval, ready.timeout),
        (Duration::from_secs(1), Duration::from_secs(30))
    );
    let alive = spec.alive.as_ref().unwrap();
    assert_eq!(
        alive.probe,
        zist_core::Probe::Http("http://127.0.0.1:8080/health".into())
    );
    assert_eq!(
        (alive.interval, alive.timeout, alive.failures),
        (Duration::from_secs(10), Duration::from_secs(5), 5)
    );
    // Round trip through the JSON of process.add and the state file.
    let json = zist_core::program_to_json(spec);
    assert_eq!(json["Ready"]["Tcp"], "127.0.0.1:5432", "{json}");
    assert_eq!(json["Alive"]["Failures"], 5, "{json}");

    // Line and Notify, with a watchdog; the same through JSON.
    let file = with_program(&dir, "Ready = { Notify = true, WatchdogSec = \"20s\" }");
    let notify = Config::load(&file).unwrap().programs[0]
        .ready
        .clone()
        .unwrap();
    assert_eq!(notify.probe, zist_core::Probe::Notify);
    assert_eq!(notify.watchdog, Some(Duration::from_secs(20)));
    let file = with_program(&dir, "Ready = { Line = 'listening on \\d+' }");
    let spec = Config::load(&file).unwrap().programs.remove(0);
    let line = spec.ready.as_ref().unwrap();
    assert_eq!(
        line.probe,
        zist_core::Probe::Line(zist_core::LinePattern::new(r"listening on \d+").unwrap())
    );
    let json = zist_core::program_to_json(&spec);
    assert_eq!(json["Ready"]["Line"], r"listening on \d+", "{json}");
    let (back, _) = zist_core::config::program_from_json("test", &json, dir.path()).unwrap();
    assert_eq!(back.ready, spec.ready);

    for (keys, what) in [
        (
            "Ready = { Tcp = \"a:1\", Exec = \"true\" }",
            "names Exec and Tcp",
        ),
        ("Ready = { Interval = \"1s\" }", "names no check"),
        ("Ready = { Tcp = \"nowhere\" }", "must be \"host:port\""),
        (
            "Ready = { Http = \"https://x/\" }",
            "must be an http:// URL",
        ),
        (
            "Ready = { Tcp = \"a:1\", Failures = 2 }",
            "has no key `Failures`",
        ),
        (
            "Ready = { Line = \"(unclosed\" }",
            "is not a regular expression",
        ),
        (
            "Alive = { Line = \"ready\" }",
            "a Line check is for Ready only",
        ),
        (
            "Alive = { Notify = true }",
            "a Notify check is for Ready only",
        ),
        ("Ready = { Notify = 1 }", "must be true"),
        (
            "Ready = { Tcp = \"a:1\", WatchdogSec = \"5s\" }",
            "WatchdogSec` needs Notify = true",
        ),
        ("Alive = \"tcp\"", "must be a table"),
    ] {
        let file = with_program(&dir, keys);
        let text = messages(&Config::load(&file).unwrap_err()).join("\n");
        assert!(text.contains(what), "{keys}: no {what:?} in:\n{text}");
    }
}

#[test]
fn after_names_programs_of_the_config_and_a_cycle_is_an_error_that_shows_it() {
    let dir = Dir::new();
    let program = |name: &str, after: &str| {
        format!("[[Program]]\nName = \"{name}\"\nPath = \"/bin/sleep\"\nAfter = {after}\n")
    };
    let file = dir.write(
        "ok.toml",
        &format!(
            "Token = \"t\"\n{}{}{}",
            program("db", "[]"),
            program("app", "[\"db\"]"),
            program("worker", "[\"app\", \"db\"]")
        ),
    );
    let config = Config::load(&file).unwrap();
    let worker = config
        .programs
        .iter()
        .find(|p| p.name.as_str() == "worker")
        .unwrap();
    let after: Vec<&str> = worker.after.iter().map(|n| n.as_str()).collect();
    assert_eq!(after, ["app", "db"]);
    let json = zist_core::program_to_json(worker);
    assert_eq!(json["After"], serde_json::json!(["app", "db"]));

    for (programs, what) in [
        (
            program("app", "[\"dv\"]") + &program("db", "[]"),
            "`After` of `app` names `dv`, which is no program of this config (did you mean `db`?)",
        ),
        (
            program("app", "[\"app\"]"),
            "`After` makes a cycle, so none of these could start: app -> app",
        ),
        (
            program("a", "[\"b\"]") + &program("b", "[\"c\"]") + &program("c", "[\"a\"]"),
            "`After` makes a cycle, so none of these could start: a -> b -> c -> a",
        ),
        (
            program("a", "\"b\""),
            "`After` must be an array like [\"db\"]",
        ),
        (
            program("a", "[\"no good\"]"),
            "`After`: program name \"no good\"",
        ),
        (
            program("a", "[\"b\", \"b\"]") + &program("b", "[]"),
            "`After` names \"b\" twice",
        ),
    ] {
        let file = dir.write("bad.toml", &format!("Token = \"t\"\n{programs}"));
        let text = messages(&Config::load(&file).unwrap_err()).join("\n");
        assert!(text.contains(what), "no {what:?} in:\n{text}");
    }
}

#[test]
fn instances_take_1_to_1000_and_each_logs_into_files_of_its_own() {
    let dir = Dir::new();
    let file = with_program(&dir, "Instances = 3");
    let config = Config::load(&file).unwrap();
    let spec = &config.programs[0];
    assert_eq!(spec.instances, Some(3));
    let logs = config.daemon.log_dir.clone();
    assert_eq!(spec.logfile, Some(logs.join("p-{instance}.out.log")));
    let second = spec.instance(1);
    assert_eq!(second.name.as_str(), "p:1");
    assert_eq!(second.logfile, Some(logs.join("p-1.out.log")));
    assert_eq!(second.err_logfile, Some(logs.join("p-1.err.log")));
    assert_eq!(
        second.env.get("ZIST_INSTANCE").map(String::as_str),
        Some("1")
    );
    assert_eq!(zist_core::program_to_json(spec)["Instances"], 3);
    // Without the key: one process, named as the program, logging as before.
    let file = with_program(&dir, "");
    let plain = Config::load(&file).unwrap().programs.remove(0);
    assert_eq!(plain.instances, None);
    assert_eq!(plain.logfile, Some(logs.join("p.out.log")));
    for value in ["0", "1001", "\"2\""] {
        let file = with_program(&dir, &format!("Instances = {value}"));
        let text = messages(&Config::load(&file).unwrap_err()).join("\n");
        assert!(text.contains("Instances"), "{value}: {text}");
    }
}

#[test]
fn listen_takes_ip_addresses_and_absolute_paths() {
    let dir = Dir::new();
    let file = with_program(
        &dir,
        "Listen = [\"127.0.0.1:8080\", \"[::1]:8080\", \"/run/app.sock\"]",
    );
    let spec = Config::load(&file).unwrap().programs.remove(0);
    let shown: Vec<String> = spec.listen.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["127.0.0.1:8080", "[::1]:8080", "/run/app.sock"]);
    let json = zist_core::program_to_json(&spec);
    assert_eq!(
        json["Listen"],
        serde_json::json!(["127.0.0.1:8080", "[::1]:8080", "/run/app.sock"])
    );
    for (keys, what) in [
        ("Listen = [\"localhost:80\"]", "is neither an address like"),
        ("Listen = [\"app.sock\"]", "nor an absolute path"),
        ("Listen = \"127.0.0.1:80\"", "must be an array"),
        (
            "Listen = [\"127.0.0.1:80\", \"127.0.0.1:80\"]",
            "names \"127.0.0.1:80\" twice",
        ),
    ] {
        let file = with_program(&dir, keys);
        let text = messages(&Config::load(&file).unwrap_err()).join("\n");
        assert!(text.contains(what), "{keys}: no {what:?} in:\n{text}");
    }
}

#[test]
fn tokens_have_a_name_a_secret_and_a_scope_and_a_config_needs_one() {
    let dir = Dir::new();
    let file = dir.write(
        "conf.toml",
        "Tokens = [{ Name = \"ci\", Token = \"c1\", Scope = \"operate\" }, { Name = \"dash\", Token = \"d1\", Scope = \"read\" }]\nAllowedHosts = [\"Zist.Example.com\"]\n",
    );
    let config = Config::load(&file).unwrap();
    assert_eq!(
        config.daemon.token, "",
        "Token is not needed when Tokens has one"
    );
    let names: Vec<(&str, zist_core::Scope)> = config
        .daemon
        .tokens
        .iter()
        .map(|t| (t.name.as_str(), t.scope))
        .collect();
    assert_eq!(
        names,
        [
            ("ci", zist_core::Scope::Operate),
            ("dash", zist_core::Scope::Read)
        ]
    );
    assert_eq!(config.daemon.allowed_hosts, ["zist.example.com"]);
    assert!(!format!("{:?}", config.daemon).contains("c1\""));
    let access = config.daemon.access();
    assert_eq!(access.caller(b"d1").unwrap().who.as_ref(), "dash");
    for (text, what) in [
        ("AllowedHosts = []\n", "no Token"),
        (
            "Token = \"t\"\nTokens = [{ Name = \"a\", Token = \"t\", Scope = \"read\" }]\n",
            "the same as `Token`",
        ),
        (
            "Token = \"t\"\nTokens = [{ Name = \"a\", Token = \"x\", Scope = \"root\" }]\n",
            "use \"read\", \"operate\" or \"admin\"",
        ),
        (
            "Token = \"t\"\nTokens = [{ Name = \"a\", Token = \"x\" }]\n",
            "needs Name, Token and Scope",
        ),
        (
            "Token = \"t\"\nTokens = [{ Name = \"a\", Token = \"x\", Scope = \"read\" }, { Name = \"a\", Token = \"y\", Scope = \"read\" }]\n",
            "used twice",
        ),
        (
            "Token = \"t\"\nAllowedHosts = [\"a b\"]\n",
            "is not a host name",
        ),
    ] {
        let file = dir.write("bad.toml", text);
        let message = messages(&Config::load(&file).unwrap_err()).join("\n");
        assert!(message.contains(what), "{text}: no {what:?} in:\n{message}");
    }
}
