//! A Redis for the first run. `embedq demo` on the embedded default needs a Redis; when the
//! configured one is the default local address and nothing answers there, the demo starts
//! `redis-server` as its child (append-only persistence under `./data/redis`) and stops it when
//! it ends — or, without `redis-server` on the PATH, says what to install and run. Any other
//! Redis URL is the user's: it is used as it is.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Redis URL of `config/default.toml`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// A `redis-server` this process started, stopped when dropped.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
}

impl LocalRedis {
    /// Whether this process started the server.
    pub fn started(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes sure a Redis answers at `url`: starts one under `data_dir` if `url` is the default and
/// nothing answers there.
pub async fn ensure(url: &str, data_dir: &Path) -> anyhow::Result<LocalRedis> {
    if url != DEFAULT_URL || answers(6379).await {
        return Ok(LocalRedis { child: None });
    }
    start(6379, data_dir).await
}

async fn answers(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await,
        Ok(Ok(_))
    )
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// Starts `redis-server` on 127.0.0.1:`port` with its files under `data_dir`, and waits until
/// it accepts connections.
pub async fn start(port: u16, data_dir: &Path) -> anyhow::Result<LocalRedis> {
    let Some(server) = on_path("redis-server") else {
        bail!(
            "nothing answers at redis://127.0.0.1:{port}, and redis-server is not installed. \
             Install Redis (Debian/Ubuntu: apt install redis-server; macOS: brew install redis) \
             and run `redis-server`, or set EMBEDQ__REDIS__URL to a Redis you have"
        );
    };
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let dir = data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", data_dir.display()))?;
    let log = dir.join("redis.log");
    let child = Command::new(&server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--appendonly", "yes", "--save", ""])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let redis = LocalRedis { child: Some(child) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(port).await {
        if Instant::now() > deadline {
            bail!(
                "started {} but it does not answer on port {port}; see {}",
                server.display(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "no Redis was running: started {} on 127.0.0.1:{port} (data in {}); it stops with the demo",
        server.display(),
        dir.display()
    );
    Ok(redis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_a_redis_that_answers_and_stops_it_when_dropped() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        assert!(!answers(port).await, "the free port is taken");
        let redis = start(port, &dir.path().join("redis")).await.unwrap();
        assert!(redis.started());
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        assert_eq!(pong, "PONG");
        drop(conn);
        drop(redis);
        assert!(!answers(port).await, "the server outlived its handle");
        // Another URL is the user's: nothing is started for it.
        let theirs = ensure("redis://10.0.0.1:6379", dir.path()).await.unwrap();
        assert!(!theirs.started());
    }
}
