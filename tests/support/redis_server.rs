//! A throw-away `redis-server` on a free port, without persistence (or with an append-only
//! file synced on every write, [`RedisServer::start_persistent`]), that a test can kill and
//! start again on the same port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// With persistence: where the append-only file lives.
    dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self {
            port: super::free_port(),
            child: None,
            dir: None,
        };
        server.restart();
        server
    }

    /// With `appendonly yes` and `appendfsync always`: a write Redis acknowledged survives a
    /// SIGKILL, as in a production Redis that persists.
    pub fn start_persistent() -> Self {
        let mut server = Self {
            port: super::free_port(),
            child: None,
            dir: Some(tempfile::tempdir().expect("temp dir")),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no goodbye to clients, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match &self.dir {
            Some(dir) => cmd
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir.path()),
            None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
