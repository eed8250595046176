//! A TCP proxy the test controls, placed between the daemon and Redis, PostgreSQL or the
//! provider: it forwards bytes, and on command cuts every connection (with a reset) and resets
//! new ones, goes down (connections reset, the port closed: new ones are refused), stalls them
//! (bytes held, connections open), or slows them (a delay before each chunk), until restored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes as they come.
    Pass,
    /// Reset every connection; accept new ones only to reset them.
    Cut,
    /// Reset every connection and close the port: new connections are refused.
    Down,
    /// Hold bytes in both directions; connections stay open.
    Stall,
    /// Wait this long before forwarding each chunk.
    Slow(Duration),
}

pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Pass);
        let mode = Arc::new(mode);
        let task = tokio::spawn({
            let mode = mode.clone();
            async move {
                let mut listener = Some(listener);
                let mut changes = mode.subscribe();
                loop {
                    let down = *changes.borrow_and_update() == Mode::Down;
                    if down {
                        listener = None;
                    } else if listener.is_none() {
                        match TcpListener::bind(addr).await {
                            Ok(l) => listener = Some(l),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                        }
                    }
                    let Some(l) = &listener else {
                        if changes.changed().await.is_err() {
                            return;
                        }
                        continue;
                    };
                    tokio::select! {
                        accepted_conn = l.accept() => {
                            if let Ok((client, _)) = accepted_conn {
                                tokio::spawn(relay(client, upstream, mode.subscribe()));
                            }
                        }
                        changed = changes.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Proxy {
            addr,
            upstream,
            mode,
            task,
        }
    }

    /// Parses `host:port` of a URL such as `redis://127.0.0.1:6379` or
    /// `postgres://user@127.0.0.1:5432/db` and proxies to it.
    pub async fn for_url(url: &str) -> Proxy {
        Self::start(authority(url)).await
    }

    /// `url` with its host:port replaced by the proxy's.
    pub fn rewrite(&self, url: &str) -> String {
        url.replacen(&self.upstream.to_string(), &self.addr.to_string(), 1)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn cut(&self) {
        self.set(Mode::Cut)
    }

    /// As if the server went away: connections reset, new ones refused.
    pub fn down(&self) {
        self.set(Mode::Down)
    }

    pub fn stall(&self) {
        self.set(Mode::Stall)
    }

    pub fn slow(&self, delay: Duration) {
        self.set(Mode::Slow(delay))
    }

    pub fn restore(&self) {
        self.set(Mode::Pass)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Cut);
        self.task.abort();
    }
}

/// `host:port` of a URL, resolved to a socket address.
pub fn authority(url: &str) -> SocketAddr {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let hostport = rest.split(['/', '?']).next().unwrap();
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().expect("a host:port in the URL")
}

/// Resets the connection (SO_LINGER 0, then close: with a zero linger the close does not block).
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Waits until a chunk may go through; false when the connection must be cut.
async fn gate(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Pass => return true,
            Mode::Slow(d) => {
                tokio::time::sleep(d).await;
                return true;
            }
            Mode::Cut | Mode::Down => return false,
            Mode::Stall => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Writes all of `data`, sharing the stream with the pump of the other direction.
async fn write_all(to: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Moves bytes one way until EOF, an error, or a cut. Each direction has its own pump, so a
/// peer that writes while it is being written to never deadlocks the proxy.
async fn pump(from: &TcpStream, to: &TcpStream, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        if !gate(&mut mode).await || write_all(to, &buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Completes when the proxy is cut.
async fn cut(mut mode: watch::Receiver<Mode>) {
    loop {
        let current = *mode.borrow_and_update();
        if matches!(current, Mode::Cut | Mode::Down) {
            return;
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    if matches!(*mode.borrow(), Mode::Cut | Mode::Down) {
        return reset(client);
    }
    let server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(_) => return reset(client),
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = pump(&client, &server, mode.clone()) => {}
        _ = pump(&server, &client, mode.clone()) => {}
        _ = cut(mode.clone()) => {}
    }
    reset(client);
    reset(server);
}
