//! The one shutdown signal shared by every part of the daemon.
//!
//! A [`Shutdown`] is cheap to clone; `trigger` is idempotent and every holder can await
//! `triggered`. The HTTP server, the supervisor and the signal handler all use this one type.

use tokio_util::sync::CancellationToken;

/// A shared, clonable shutdown flag.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding a clone of this handle to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once `trigger` has been called.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn os_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
