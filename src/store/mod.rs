//! The state store: contexts, items and jobs in SQL, through sqlx.
//!
//! One [`Store`] serves PostgreSQL (production) and SQLite (the embedded default), chosen by the
//! database URL. The schema and every statement are written once, in the SQL both accept
//! (`$n` parameters, `ON CONFLICT`, `RETURNING`), and run through sqlx's `Any` driver, so the
//! same tests prove both backends.

mod documents;
mod items;
mod jobs;
mod lifecycle;
mod outcomes;
mod placeholders;
mod planning;
mod reconcile;
mod records;
mod schedules;

pub use items::{NewItem, UpsertCounts, UpsertReport};
pub use jobs::{CreatedJob, JobFilter, NewJob};
pub use lifecycle::{CurrentItem, DeleteReport, PayloadChange, Tombstone};
pub use outcomes::{CommitReport, HitRow, LoadedItem, OutcomeCounts, TaskItemRow, TaskOutcomes};
pub use planning::{CompletedItem, PlannedItem, ScopeText};
pub use reconcile::StrandedJob;
pub use records::{ItemRecord, JobRecord};
pub use schedules::{FireOutcome, Firing, ScheduleFiring};

use crate::config::DatabaseSettings;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::path::Path;

/// Which SQL engine is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("item {item} belongs to context {owner}, not {requested}")]
    ItemInOtherContext {
        item: String,
        owner: String,
        requested: String,
    },
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot create the database directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
}

/// Handle to the state store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Opens a pool. For SQLite the file (and its directory) is created when missing and the
    /// database runs in WAL mode, so readers do not wait on the writer.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = Backend::from_url(&settings.url);
        let mut url = settings.url.clone();
        if backend == Backend::Sqlite {
            let path = sqlite_path(&url);
            if let Some(dir) = Path::new(path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Self { pool, backend })
    }

    /// Applies the migrations that have not run yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A transaction that will write. On SQLite it takes the write lock at its start (`BEGIN
    /// IMMEDIATE`, waiting up to the busy timeout): a transaction that reads first and writes
    /// later could otherwise fail with "database is locked" (SQLITE_BUSY_SNAPSHOT) when another
    /// writer committed in between, which no busy timeout waits out.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Whether an error is the database being busy (SQLite's lock held past the busy timeout,
    /// PostgreSQL's serialization or lock failures): the caller may try again.
    pub fn is_busy(error: &StoreError) -> bool {
        let StoreError::Database(sqlx::Error::Database(db)) = error else {
            return false;
        };
        matches!(
            db.code().as_deref(),
            // SQLITE_BUSY (and its extended codes, 517 BUSY_SNAPSHOT), SQLITE_LOCKED;
            // PostgreSQL serialization_failure, deadlock_detected, lock_not_available.
            Some("5" | "517" | "261" | "6" | "40001" | "40P01" | "55P03")
        )
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// One round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await
    }
}

fn sqlite_path(url: &str) -> &str {
    let rest = url.trim_start_matches("sqlite:");
    let rest = rest.trim_start_matches("//");
    rest.split('?').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://data/embedq.db"), "data/embedq.db");
        assert_eq!(sqlite_path("sqlite:///tmp/x.db?mode=rwc"), "/tmp/x.db");
        assert_eq!(Backend::from_url("postgres://u@h/db"), Backend::Postgres);
    }
}
