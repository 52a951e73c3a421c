//! A small HTTP server that takes its listening socket from zist (or
//! systemd): `Listen = ["127.0.0.1:8080"]` in its program file, and zist
//! passes the socket at fd 3 with `LISTEN_FDS`, `LISTEN_PID` and
//! `LISTEN_FDNAMES`.
//!
//! Every answer says which process served it (`served by pid 4242`). On
//! SIGTERM it stops accepting, finishes the requests it has, and exits:
//! with `Instances = 2` and a rolling restart (`zistcl web restart
//! --rolling`), clients never see a refused or broken request, because the
//! socket itself never closes and the other instance keeps accepting.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut fds = listenfd::ListenFd::from_env();
    let Some(socket) = fds.take_tcp_listener(0)? else {
        eprintln!("listen-server: no socket at fd 3; run it with Listen = [\"127.0.0.1:8080\"]");
        std::process::exit(2);
    };
    socket.set_nonblocking(true)?;
    let listener = TcpListener::from_std(socket)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut serving = JoinSet::new();
    println!(
        "listening on {} as pid {}",
        listener.local_addr()?,
        std::process::id()
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    serving.spawn(answer(stream));
                }
                Err(e) => eprintln!("accept: {e}"),
            },
            _ = term.recv() => break,
            Some(_) = serving.join_next() => {}
        }
    }
    // Stop accepting (this process's copy of the socket only), finish what is under way.
    drop(listener);
    while serving.join_next().await.is_some() {}
    println!("pid {} done", std::process::id());
    Ok(())
}

/// Reads one request and answers it, closing the connection.
async fn answer(mut stream: TcpStream) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let body = format!("served by pid {}\n", std::process::id());
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
}
