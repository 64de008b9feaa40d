//! Reading the event record, whichever backend holds it: `pxed events`, the
//! admin pages and the API ask an [`EventLog`]. With a shared database it
//! holds every server's steps, each tagged with the server that handled it.

use std::path::PathBuf;

use super::{Machine, Query, Reader, StoredEvent};

/// The reading side of the event record (`crate::storage` picks one).
#[async_trait::async_trait]
pub trait EventLog: Send + Sync {
    /// Where it is, for logs.
    fn describe(&self) -> String;
    /// The newest `q.limit` steps `q` selects, oldest first.
    async fn query(&self, q: Query) -> anyhow::Result<Vec<StoredEvent>>;
    /// The id of the newest row (0 when there is none).
    async fn last_id(&self) -> anyhow::Result<i64>;
    /// Every machine seen, most recent first (at most `limit`).
    async fn machines(&self, limit: usize) -> anyhow::Result<Vec<Machine>>;
}

/// The record in a SQLite file, read on a blocking thread.
pub struct SqliteLog(pub PathBuf);

impl SqliteLog {
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T, super::ReadError> + Send + 'static,
    ) -> anyhow::Result<T> {
        let path = self.0.clone();
        Ok(tokio::task::spawn_blocking(move || Reader::open(&path).and_then(|r| f(&r))).await??)
    }
}

#[async_trait::async_trait]
impl EventLog for SqliteLog {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }

    async fn query(&self, q: Query) -> anyhow::Result<Vec<StoredEvent>> {
        self.read(move |r| r.query(&q)).await
    }

    async fn last_id(&self) -> anyhow::Result<i64> {
        self.read(|r| r.last_id()).await
    }

    async fn machines(&self, limit: usize) -> anyhow::Result<Vec<Machine>> {
        self.read(move |r| r.machines(limit)).await
    }
}
