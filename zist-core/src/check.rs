//! Readiness and liveness checks (docs/reference.md §9): one try of a
//! probe, bounded by a timeout. Tcp and Http run inside zistd (no process
//! is spawned for them); Exec runs a command as the program would run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spec::Probe;

/// What an Exec probe runs with: the program's environment and folder.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context {
    pub env: BTreeMap<String, String>,
    pub workingdir: Option<PathBuf>,
}

/// One try of `probe`, given `timeout`; the error says what failed, for a
/// person (`"not accepting yet: Connection refused"`).
pub(crate) async fn try_once(
    probe: &Probe,
    timeout: Duration,
    context: &Context,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt(probe, context)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn attempt(probe: &Probe, context: &Context) -> Result<(), String> {
    match probe {
        Probe::Tcp(address) => tcp(address).await,
        Probe::Http(url) => http_get(url).await,
        Probe::Exec(words) => exec(words, context).await,
        // Watched by the program's actor, not tried.
        Probe::Line(_) | Probe::Notify => Err(format!("{probe} is not tried, but watched")),
    }
}

/// A connection to `address` would be accepted.
///
/// On a loopback address zist asks the kernel instead of connecting
/// ([`listening`]): a connection is accepted exactly when a socket listens
/// there with room in its accept queue, and a question over netlink costs
/// a few microseconds where a handshake and its reset cost a hundred.
/// Elsewhere (or where the kernel does not answer such questions) it
/// connects; the socket is closed with a reset (linger 0): no FIN exchange
/// and no TIME_WAIT left per check. A loopback connect completes at once
/// and needs no registration with the reactor.
async fn tcp(address: &str) -> Result<(), String> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, connect, setsockopt, socket,
        sockopt,
    };
    let target: std::net::SocketAddr = match address.parse() {
        Ok(target) => target,
        Err(_) => tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("cannot resolve {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} resolves to nothing"))?,
    };
    if target.ip().is_loopback()
        && let Some(verdict) = listening(target)
    {
        return verdict;
    }
    let family = if target.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("cannot make a socket: {e}"))?;
    let _ = setsockopt(
        &fd,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
    let refused = |e: nix::errno::Errno| format!("not accepting yet: {}", std::io::Error::from(e));
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let connected = match target {
        std::net::SocketAddr::V4(v4) => connect(raw, &SockaddrIn::from(v4)),
        std::net::SocketAddr::V6(v6) => connect(raw, &SockaddrIn6::from(v6)),
    };
    match connected {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(refused(e)),
    }
    // Not at once (another host): wait until the socket is writable.
    let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd))
        .map_err(|e| format!("cannot wait for the connection: {e}"))?;
    stream
        .writable()
        .await
        .map_err(|e| format!("cannot wait for the connection: {e}"))?;
    match stream.take_error() {
        Ok(None) => Ok(()),
        Ok(Some(e)) | Err(e) => Err(format!("not accepting yet: {e}")),
    }
}

/// Asks the kernel (sock_diag, as `ss` does) whether a TCP socket listens
/// on local `target` with room in its accept queue. `None` when the kernel
/// cannot be asked (no sock_diag, a filtered netlink): then connect.
fn listening(target: std::net::SocketAddr) -> Option<Result<(), String>> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        setsockopt, socket, sockopt,
    };
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const TCP_LISTEN: u8 = 10;
    // One socket for every check, made on first use; a question and its
    // answer are a moment under the lock.
    static DIAG: std::sync::Mutex<Option<(std::os::fd::OwnedFd, u32)>> =
        std::sync::Mutex::new(None);
    let mut diag = DIAG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if diag.is_none() {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )
        .ok()?;
        // Never more than a moment: the kernel answers at once or not at all.
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 200_000),
        )
        .ok()?;
        *diag = Some((fd, 0));
    }
    let (fd, sequence) = diag.as_mut()?;
    *sequence = sequence.wrapping_add(1);
    let sequence = *sequence;
    // nlmsghdr, then inet_diag_req_v2 for the one socket that a packet to
    // `target` would reach: source = target, destination none, no cookie.
    let mut request = Vec::with_capacity(72);
    request.extend_from_slice(&72u32.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request.extend_from_slice(&sequence.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    let family = if target.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    request.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    request.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    request.extend_from_slice(&target.port().to_be_bytes()); // source port
    request.extend_from_slice(&0u16.to_be_bytes()); // destination port
    let mut source = [0u8; 16];
    match target.ip() {
        std::net::IpAddr::V4(ip) => source[..4].copy_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => source.copy_from_slice(&ip.octets()),
    }
    request.extend_from_slice(&source);
    request.extend_from_slice(&[0u8; 16]); // destination address
    request.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    request.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    let raw = std::os::fd::AsRawFd::as_raw_fd(&*fd);
    if sendto(raw, &request, &NetlinkAddr::new(0, 0), MsgFlags::empty()).is_err() {
        *diag = None;
        return None;
    }
    let mut buffer = [0u8; 512];
    // The answer to this question (one to an earlier, timed-out one is skipped).
    let answer = loop {
        let Ok(n) = recv(raw, &mut buffer, MsgFlags::empty()) else {
            *diag = None;
            return None;
        };
        if buffer.get(8..12) == Some(&sequence.to_ne_bytes()[..]) {
            break &buffer[..n];
        }
    };
    drop(diag);
    let u16_at = |at: usize| Some(u16::from_ne_bytes(answer.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(answer.get(at..at + 4)?.try_into().ok()?));
    let none = || Err(format!("not accepting yet: nothing listens on {target}"));
    match u16_at(4)? {
        NLMSG_ERROR => {
            let error = i32::from_ne_bytes(answer.get(16..20)?.try_into().ok()?);
            // No such socket is the answer; anything else: ask by connecting.
            (error == -libc::ENOENT).then(none)
        }
        SOCK_DIAG_BY_FAMILY => {
            // inet_diag_msg after the header: family, state, ..., then the
            // accept queue's length and limit at 56 and 60.
            let state = *answer.get(17)?;
            let (queued, limit) = (u32_at(16 + 56)?, u32_at(16 + 60)?);
            Some(match state {
                TCP_LISTEN if queued > limit => Err(format!(
                    "not accepting: the accept queue on {target} is full ({queued} waiting, backlog {limit})"
                )),
                TCP_LISTEN => Ok(()),
                _ => none(),
            })
        }
        _ => None,
    }
}

/// `GET url` (http only); a 2xx status passes.
async fn http_get(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(address.as_str())
        .await
        .map_err(|e| format!("not accepting yet: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: zist-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // The status line is all that counts.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "the answer is not HTTP".to_owned())?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// Runs `words` with the program's Env and Workingdir; exit 0 passes. The
/// command is killed (with its group) when the try is given up.
async fn exec(words: &[String], context: &Context) -> Result<(), String> {
    let (program, args) = words
        .split_first()
        .ok_or_else(|| "an empty command".to_owned())?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(&context.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &context.workingdir {
        command.current_dir(dir);
    }
    let gate = crate::reaper::spawn_gate();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id().map(|p| p as i32);
    if let Some(pid) = pid {
        crate::reaper::claim(pid);
    }
    drop(gate);
    /// Ends the command's group if the try is dropped (its timeout).
    struct Group(Option<i32>);
    impl Drop for Group {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let mut group = Group(pid);
    let status = child.wait().await;
    if let Some(pid) = pid {
        crate::reaper::release(pid);
    }
    group.0 = None;
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(match status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        }),
        Err(e) => Err(format!("cannot wait for it: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_http_and_exec_pass_and_fail_with_a_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let context = Context::default();
        let second = Duration::from_secs(5);
        assert_eq!(
            try_once(&Probe::Tcp(address.clone()), second, &context).await,
            Ok(())
        );
        // A tiny server: 503, then 200.
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", http.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            for status in ["503 Service Unavailable", "200 OK"] {
                let (mut stream, _) = http.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        assert_eq!(
            try_once(&Probe::Http(url.clone()), second, &context).await,
            Err("HTTP 503".into())
        );
        assert_eq!(try_once(&Probe::Http(url), second, &context).await, Ok(()));
        server.join().unwrap();
        drop(listener);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = closed.local_addr().unwrap().to_string();
        drop(closed);
        let refused = try_once(&Probe::Tcp(gone), second, &context)
            .await
            .unwrap_err();
        assert!(refused.contains("not accepting"), "{refused}");
        let exec = |words: &[&str]| Probe::Exec(words.iter().map(|w| w.to_string()).collect());
        assert_eq!(try_once(&exec(&["true"]), second, &context).await, Ok(()));
        assert_eq!(
            try_once(&exec(&["sh", "-c", "exit 4"]), second, &context).await,
            Err("exit status 4".into())
        );
        let slow = try_once(
            &exec(&["sleep", "30"]),
            Duration::from_millis(200),
            &context,
        )
        .await
        .unwrap_err();
        assert!(slow.contains("no answer"), "{slow}");
    }

    #[test]
    fn the_kernel_says_whether_a_local_socket_listens_with_room_in_its_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        assert_eq!(listening(address), Some(Ok(())));
        // Listening on every address counts for loopback too.
        let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = any.local_addr().unwrap().port();
        assert_eq!(listening(([127, 0, 0, 1], port).into()), Some(Ok(())));
        let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        assert_eq!(listening(v6.local_addr().unwrap()), Some(Ok(())));
        drop(listener);
        let gone = listening(address).unwrap().unwrap_err();
        assert_eq!(
            gone,
            format!("not accepting yet: nothing listens on {address}")
        );

        // A backlog of 0 is full once a connection waits in it.
        use nix::sys::socket::{
            AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, socket,
        };
        let full = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&full),
            &SockaddrIn::new(127, 0, 0, 1, 0),
        )
        .unwrap();
        listen(&full, Backlog::new(0).unwrap()).unwrap();
        let bound: SockaddrIn =
            nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&full)).unwrap();
        let at = std::net::SocketAddr::from(([127, 0, 0, 1], bound.port()));
        let _waiting = std::net::TcpStream::connect(at).unwrap();
        let verdict = listening(at).unwrap().unwrap_err();
        assert!(verdict.contains("accept queue"), "{verdict}");
    }
}
