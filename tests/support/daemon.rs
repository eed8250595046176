//! The `embedq serve` binary as a child process, configured through environment variables,
//! that a test can SIGKILL and start again.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `(name, value)` pairs a [`Daemon`] is started with, owned.
pub fn owned_env<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub struct Daemon {
    pub port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `embedq serve` with `EMBEDQ__…` variables and waits for `/healthz`.
    pub fn start(env: Vec<(String, String)>) -> Self {
        let mut d = Self {
            port: super::free_port(),
            env,
            child: None,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedq"));
        cmd.arg("serve")
            .env("EMBEDQ__SERVER__LISTEN", format!("127.0.0.1:{}", self.port))
            .env_remove("EMBEDQ_ENV")
            .stdout(Stdio::null())
            .stderr(if std::env::var("EMBEDQ_TEST_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn embedq"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("embedq exited during start-up: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("embedq did not listen on {}", self.port);
    }

    /// Sets (or replaces) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().expect("wait")
    }

    /// Waits up to `within` for the daemon to exit by itself; its status, or `None` if it still
    /// runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
