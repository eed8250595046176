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
    binary: std::path::PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `embedq serve` (the binary cargo built for the tests) with `EMBEDQ__…` variables
    /// and waits for it to listen.
    pub fn start(env: Vec<(String, String)>) -> Self {
        Self::start_binary(env!("CARGO_BIN_EXE_embedq").into(), env)
    }

    /// [`Daemon::start`] with another build of the binary (a bench's release build).
    pub fn start_binary(binary: std::path::PathBuf, env: Vec<(String, String)>) -> Self {
        let mut d = Self {
            port: super::free_port(),
            env,
            binary,
            child: None,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.binary);
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

/// The binary users run, for benchmarks: `cargo build --release --bin embedq` in a target
/// directory of its own (a `cargo bench` build carries the tests' fault points, through the
/// crate's dev-dependency on itself), checked by its `--version` to be a build without them.
/// The first call builds it (minutes, once); later calls find it up to date.
///
/// `EMBEDQ_BENCH_BINARY` names a build to use instead (another commit's, for a before/after
/// comparison); it is checked the same way.
pub fn release_binary() -> std::path::PathBuf {
    if let Some(binary) = std::env::var_os("EMBEDQ_BENCH_BINARY") {
        return checked_release_binary(binary.into());
    }
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp
        .parent()
        .expect("the target directory")
        .join("bench-release");
    eprintln!(
        "building the release binary without test features into {}",
        target.display()
    );
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--bin", "embedq"])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --release failed: {status}");
    checked_release_binary(target.join("release/embedq"))
}

/// `binary`, once its `--version` shows a build without the tests' fault points.
fn checked_release_binary(binary: std::path::PathBuf) -> std::path::PathBuf {
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .expect("run embedq --version");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        !version.contains("fault-injection"),
        "the benchmarked binary must be the one users run, not a test build: {version}"
    );
    eprintln!("benchmarking {} ({})", binary.display(), version.trim());
    binary
}
