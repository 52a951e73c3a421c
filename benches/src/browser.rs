//! Headless Chromium under chromedriver (Debian's chromium and
//! chromium-driver, or ZIST_CHROMIUM / ZIST_CHROMEDRIVER), for the
//! dashboard's test and its first-render measurement.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

fn chromedriver() -> String {
    std::env::var("ZIST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

fn chromium() -> String {
    std::env::var("ZIST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Whether Chromium and chromedriver are installed.
pub fn available() -> bool {
    [chromedriver(), chromium()]
        .iter()
        .all(|p| std::path::Path::new(p).exists())
}

/// Lets scripts and page loads run for up to `limit`.
pub async fn allow(client: &fantoccini::Client, limit: Duration) {
    client
        .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
            Some(limit),
            Some(limit),
            Some(Duration::from_secs(0)),
        ))
        .await
        .expect("browser timeouts");
}

/// Opens zist's dashboard at `url` and gives it `token` the way a person
/// does once (kept in sessionStorage for the loads that follow).
pub async fn sign_in(client: &fantoccini::Client, url: &str, token: &str) {
    client.goto(url).await.expect("the dashboard");
    client
        .execute(
            "sessionStorage.setItem('zist-token', arguments[0])",
            vec![token.into()],
        )
        .await
        .expect("set the token");
}

/// Loads `url` and returns the time from navigation start to the frame
/// after the one that first has `n` elements matching `selector` (the page's
/// own clock).
pub async fn rows_drawn(
    client: &fantoccini::Client,
    url: &str,
    selector: &str,
    n: usize,
) -> Duration {
    allow(client, Duration::from_secs(120)).await;
    client.goto(url).await.expect("the page");
    let wait = r#"
        const [selector, want, done] = arguments;
        (function check() {
          if (document.querySelectorAll(selector).length >= want) {
            // The frame after the next one starts once the rows are painted.
            requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now())));
            return;
          }
          setTimeout(check, 5);
        })();
    "#;
    let ms = client
        .execute_async(wait, vec![selector.into(), n.into()])
        .await
        .expect("the page's rows");
    Duration::from_secs_f64(ms.as_f64().unwrap_or(0.0) / 1000.0)
}

/// Headless Chromium under chromedriver, both in a process group of their
/// own that is killed on drop.
pub struct Browser {
    /// The WebDriver session.
    pub client: fantoccini::Client,
    driver: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session.
    pub async fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let (chromedriver, chromium) = (chromedriver(), chromium());
        for program in [&chromedriver, &chromium] {
            assert!(
                std::path::Path::new(program).exists(),
                "{program} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("chromedriver setup")
            .local_addr()
            .expect("chromedriver setup")
            .port();
        let mut driver = std::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver setup");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline
                || driver.try_wait().expect("chromedriver setup").is_some()
            {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(driver.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = driver.wait();
                panic!("chromedriver did not listen on 127.0.0.1:{port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("chromedriver setup");
        let options = serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-breakpad",
                "--disable-crash-reporter", "--window-size=1400,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = connect(capabilities, connector, port).await;
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(driver.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = driver.wait();
                panic!("no browser session: {e}");
            }
        };
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Saves a screenshot as `path` and says where.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(path, png).expect("the screenshot file");
        eprintln!("screenshot: {}", path.display());
    }

    /// Ends the session (the browser quits); the drop kills what is left.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

async fn connect(
    capabilities: serde_json::Map<String, Value>,
    connector: hyper_util::client::legacy::connect::HttpConnector,
    port: u16,
) -> Result<fantoccini::Client, fantoccini::error::NewSessionError> {
    let mut builder = fantoccini::ClientBuilder::new(connector);
    builder.capabilities(capabilities);
    builder.connect(&format!("http://127.0.0.1:{port}")).await
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.driver.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.driver.wait();
    }
}
