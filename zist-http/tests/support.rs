//! A real server on 127.0.0.1 over a real supervisor, and raw HTTP calls to it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use zist_core::{ProgramName, ProgramSpec, Supervisor, SupervisorOptions};
use zist_http::HttpOptions;

pub const TOKEN: &str = "http-test-token";

/// A server and its supervisor; every program group is killed on drop.
pub struct Rig {
    pub addr: SocketAddr,
    pub sup: Supervisor,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Rig {
    pub async fn new() -> Self {
        Self::with(HttpOptions::default()).await
    }

    pub async fn with(options: HttpOptions) -> Self {
        Self::with_access(options, TOKEN.into()).await
    }

    /// A server that accepts the tokens of `access`.
    pub async fn with_access(options: HttpOptions, access: zist_core::Access) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(SupervisorOptions {
            log_dir: dir.path().join("logs"),
            ..SupervisorOptions::default()
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = zist_http::serve(
            "127.0.0.1:0".parse().unwrap(),
            access,
            sup.clone(),
            options,
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
        Self {
            addr,
            sup,
            _stop: stop,
            _dir: dir,
        }
    }

    pub async fn add(&self, name: &str, script: &str, web: bool) {
        let mut spec =
            ProgramSpec::new(ProgramName::new(name).unwrap(), "/bin/sh").args(["-c", script]);
        spec.web = web;
        spec.start_secs = Duration::from_millis(50);
        self.sup.register(spec).await.unwrap();
    }

    /// (status, head, body) of a request, bounded in time.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> (u16, String, String) {
        let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        self.raw_with(method, path, &auth).await
    }

    /// (status, head, body) of a request with these header lines, bounded in time.
    pub async fn raw_with(&self, method: &str, path: &str, headers: &str) -> (u16, String, String) {
        let (addr, method, path, headers) = (
            self.addr,
            method.to_owned(),
            path.to_owned(),
            headers.to_owned(),
        );
        let response = tokio::task::spawn_blocking(move || {
            zist_core::testing::request(addr, &method, &path, &headers, b"")
        })
        .await
        .unwrap()
        .expect("an HTTP answer");
        (response.status, response.head, response.body)
    }

    /// (status, JSON body) of a request, bounded in time.
    pub async fn call(&self, method: &str, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let (status, _, body) = self.raw(method, path, bearer).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Opens an event stream; returns the status line and head, and the stream.
    pub async fn sse(&self, path: &str) -> (String, Sse) {
        self.sse_with(path, None).await
    }

    /// Opens an event stream, with a small socket receive buffer if given
    /// (a client that stops reading then stalls the server sooner).
    pub async fn sse_with(&self, path: &str, receive_buffer: Option<u32>) -> (String, Sse) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut socket = socket.connect(self.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n",
            self.addr
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(socket);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
                .await
                .expect("no response head within 10 s")
                .unwrap();
            if n == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        (
            head,
            Sse {
                reader,
                decoded: Vec::new(),
            },
        )
    }
}

/// The reading end of an event stream, decoding the chunked transfer encoding.
pub struct Sse {
    pub reader: BufReader<tokio::net::TcpStream>,
    decoded: Vec<u8>,
}

/// One thing an event stream said.
#[derive(Debug, PartialEq)]
pub enum Said {
    /// An event: its name ("message" when none) and data.
    Event(String, String),
    /// A comment line (a heartbeat).
    Comment,
}

impl Sse {
    /// The next decoded line, None at the end of the stream.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.decoded.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.decoded.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            let mut size = String::new();
            if self.reader.read_line(&mut size).await.ok()? == 0 {
                return None;
            }
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.ok()?;
            self.decoded.extend_from_slice(&chunk[..size]);
        }
    }

    /// The next event or comment, or None at the end; panics after `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Said> {
        tokio::time::timeout(limit, self.next_unbounded())
            .await
            .expect("the event stream said nothing in time")
    }

    async fn next_unbounded(&mut self) -> Option<Said> {
        let mut name = "message".to_owned();
        let mut data: Option<String> = None;
        loop {
            let line = self.line().await?;
            if let Some(d) = line.strip_prefix("data:") {
                data = Some(d.strip_prefix(' ').unwrap_or(d).to_owned());
            } else if let Some(e) = line.strip_prefix("event:") {
                name = e.trim_start().to_owned();
            } else if line.starts_with(':') {
                return Some(Said::Comment);
            } else if line.is_empty() {
                if let Some(data) = data.take() {
                    return Some(Said::Event(name, data));
                }
            }
        }
    }

    /// The next event, skipping heartbeats.
    pub async fn event(&mut self, limit: Duration) -> Option<(String, String)> {
        loop {
            match self.next(limit).await? {
                Said::Event(name, data) => return Some((name, data)),
                Said::Comment => continue,
            }
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for info in self.sup.list() {
            if let Some(pid) = info.pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}
