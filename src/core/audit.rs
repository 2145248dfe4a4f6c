//! Reading the audit trail (listing and watching it) and keeping it within
//! its retention. Writing happens where the changes happen: each store
//! transaction appends its own events.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::{Stream, stream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    domain::{
        Error,
        audit::{AuditFilter, RecordedEvent},
    },
    store::Database,
};

/// How long events are kept, and how many watches one replica streams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditSettings {
    pub(crate) retention: Duration,
    pub(crate) max_watches: usize,
}

/// How often an idle watch looks for new events: well within the promised
/// second, at one indexed read per watch.
const WATCH_POLL: Duration = Duration::from_millis(250);
/// Events a watch reads per round.
const WATCH_BATCH: i64 = 200;
/// How often housekeeping looks for expired events, and how many it
/// deletes per statement, so no statement holds locks for long.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
const PRUNE_BATCH: i64 = 1000;

#[derive(Clone)]
pub(crate) struct Audit {
    db: Database,
    settings: AuditSettings,
    watches: Arc<Semaphore>,
}

impl Audit {
    pub(crate) fn new(db: Database, settings: AuditSettings) -> Self {
        Self {
            db,
            watches: Arc::new(Semaphore::new(settings.max_watches)),
            settings,
        }
    }

    /// One page, newest first, and where the next page starts if there is
    /// one.
    pub(crate) async fn list(
        &self,
        filter: &AuditFilter,
        before: Option<i64>,
        page_size: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<i64>), Error> {
        let limit = i64::try_from(page_size).map_err(Error::internal)?;
        // One more than asked tells whether another page exists without a
        // second query.
        let mut events = self.db.audit_events(filter, before, limit + 1).await?;
        let next = if events.len() > page_size {
            events.truncate(page_size);
            events.last().map(|event| event.cursor)
        } else {
            None
        };
        Ok((events, next))
    }

    /// Every event after `cursor` (0 for all retained ones), then each new
    /// one as it commits, on any replica. Events commit in cursor order
    /// (see `store::audit`), so reading by cursor misses none and repeats
    /// none. A failed read ends the stream with the error; the client
    /// resumes from the last cursor it got.
    pub(crate) fn watch(
        &self,
        cursor: i64,
    ) -> Result<impl Stream<Item = Result<RecordedEvent, Error>> + Send + 'static, Error> {
        let permit = Arc::clone(&self.watches)
            .try_acquire_owned()
            .map_err(|_| Error::TooManyWatches)?;
        let watch = Watch {
            db: self.db.clone(),
            cursor,
            pending: VecDeque::new(),
            failed: false,
            _permit: permit,
        };
        Ok(stream::unfold(watch, Watch::next))
    }

    /// Deletes events older than the retention, now and then, forever.
    /// Every replica may run it: each deletes whatever is still there.
    pub(crate) async fn keep_within_retention(self) {
        let Ok(retention) = chrono::Duration::from_std(self.settings.retention) else {
            return;
        };
        loop {
            let cutoff = Utc::now() - retention;
            loop {
                match self
                    .db
                    .delete_audit_events_before(cutoff, PRUNE_BATCH)
                    .await
                {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "audit retention: deleting old events failed");
                        break;
                    }
                }
            }
            tokio::time::sleep(PRUNE_INTERVAL).await;
        }
    }
}

/// One watch's state: where it is, what it has read but not yet sent, and
/// its place among the replica's watches.
struct Watch {
    db: Database,
    cursor: i64,
    pending: VecDeque<RecordedEvent>,
    failed: bool,
    _permit: OwnedSemaphorePermit,
}

impl Watch {
    async fn next(mut self) -> Option<(Result<RecordedEvent, Error>, Self)> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.cursor = event.cursor;
                return Some((Ok(event), self));
            }
            match self.db.audit_events_after(self.cursor, WATCH_BATCH).await {
                Ok(events) if events.is_empty() => tokio::time::sleep(WATCH_POLL).await,
                Ok(events) => self.pending.extend(events),
                Err(error) => {
                    self.failed = true;
                    return Some((Err(error), self));
                }
            }
        }
    }
}
