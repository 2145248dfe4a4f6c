//! The audit trail's table. Events are appended by the transaction that
//! makes the change they record ([`AppendAudit`]), so an event exists if and
//! only if its change committed.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::{prelude::*, result::Error as QueryError, sql_types::BigInt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{Database, SqliteAsync, query_error, run_detached, schema::audit_events, with_conn};
use crate::domain::{
    Error,
    audit::{AuditEvent, AuditFilter, RecordedEvent},
};

/// The transaction-scoped advisory lock every PostgreSQL audit insert takes.
/// Held from the insert (which draws the id) to the commit, it makes ids
/// commit in increasing order, across replicas: a reader that has seen id N
/// will never later find a committed id below N, which is what lets a
/// watcher resume after a cursor without gaps. Audited transactions take it
/// last, just before they commit, so it is held for a commit's time.
pub(super) const AUDIT_LOCK_ID: i64 = 0x6175_7468_6401;

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
pub(super) struct NewAuditRow {
    occurred_at: NaiveDateTime,
    event_type: &'static str,
    actor_type: Option<&'static str>,
    actor_id: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    client_address: Option<String>,
    request_id: Option<String>,
    details: String,
}

impl From<&AuditEvent> for NewAuditRow {
    fn from(event: &AuditEvent) -> Self {
        let (actor_type, actor_id) = event.actor.parts();
        let details: serde_json::Map<String, serde_json::Value> = event
            .details
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone().into()))
            .collect();
        Self {
            occurred_at: Utc::now().naive_utc(),
            event_type: event.kind.as_str(),
            actor_type,
            actor_id,
            user_id: event.user_id.map(|id| id.to_string()),
            session_id: event.session_id.map(|id| id.to_string()),
            client_address: event.origin.client_address.map(|ip| ip.to_string()),
            request_id: event.origin.request_id.clone(),
            details: serde_json::Value::Object(details).to_string(),
        }
    }
}

/// One insert per event: a handful at most, and SQLite has no batch insert
/// with defaults.
macro_rules! insert_rows {
    ($conn:expr, $events:expr) => {{
        for event in $events {
            diesel::insert_into(audit_events::table)
                .values(NewAuditRow::from(event))
                .execute(&mut *$conn)
                .await?;
        }
        Ok(())
    }};
}

/// Appends audit events inside the caller's transaction. Call it as the
/// transaction's last statement: on PostgreSQL it takes [`AUDIT_LOCK_ID`].
pub(super) trait AppendAudit {
    async fn append_audit(&mut self, events: &[AuditEvent]) -> Result<(), QueryError>;
}

impl AppendAudit for AsyncPgConnection {
    async fn append_audit(&mut self, events: &[AuditEvent]) -> Result<(), QueryError> {
        if events.is_empty() {
            return Ok(());
        }
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(AUDIT_LOCK_ID)
            .execute(self)
            .await?;
        insert_rows!(self, events)
    }
}

impl AppendAudit for SqliteAsync {
    /// SQLite's single writer already orders commits.
    async fn append_audit(&mut self, events: &[AuditEvent]) -> Result<(), QueryError> {
        insert_rows!(self, events)
    }
}

impl Database {
    /// Records events that go with no other write, e.g. a failed Login, in
    /// a transaction of their own.
    pub(crate) async fn record(&self, events: Vec<AuditEvent>) -> Result<(), Error> {
        let db = self.clone();
        run_detached(async move {
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| conn.append_audit(&events).await)
                .await
                .map_err(query_error))
        })
        .await
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_events)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
struct AuditRow {
    id: i64,
    occurred_at: NaiveDateTime,
    event_type: String,
    actor_type: Option<String>,
    actor_id: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    client_address: Option<String>,
    request_id: Option<String>,
    details: String,
}

impl From<AuditRow> for RecordedEvent {
    fn from(row: AuditRow) -> Self {
        // Only authd writes the column, always as a flat object of strings;
        // anything else reads as no details rather than failing the read.
        let details = serde_json::from_str(&row.details).unwrap_or_default();
        Self {
            cursor: row.id,
            time: row.occurred_at.and_utc(),
            kind: row.event_type,
            actor_type: row.actor_type,
            actor_id: row.actor_id,
            user_id: row.user_id,
            session_id: row.session_id,
            client_address: row.client_address,
            request_id: row.request_id,
            details,
        }
    }
}

impl Database {
    /// Up to `limit` events matching `filter`, newest first, older than
    /// the event `before` when given.
    pub(crate) async fn audit_events(
        &self,
        filter: &AuditFilter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let rows: Vec<AuditRow> = with_conn!(self, |conn| {
            let mut query = audit_events::table
                .select(AuditRow::as_select())
                .order(audit_events::id.desc())
                .limit(limit)
                .into_boxed();
            if let Some(before) = before {
                query = query.filter(audit_events::id.lt(before));
            }
            if let Some(user_id) = filter.user_id {
                query = query.filter(audit_events::user_id.eq(user_id.to_string()));
            }
            if let Some(actor_id) = &filter.actor_id {
                query = query.filter(audit_events::actor_id.eq(actor_id.clone()));
            }
            if let Some(kind) = filter.kind {
                query = query.filter(audit_events::event_type.eq(kind.as_str()));
            }
            if let Some(since) = filter.since {
                query = query.filter(audit_events::occurred_at.ge(since.naive_utc()));
            }
            if let Some(until) = filter.until {
                query = query.filter(audit_events::occurred_at.lt(until.naive_utc()));
            }
            query.load(conn).await.map_err(query_error)
        })?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// Up to `limit` events recorded after the event `after`, oldest
    /// first: every one of them, since ids commit in increasing order.
    pub(crate) async fn audit_events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let rows: Vec<AuditRow> = with_conn!(self, |conn| audit_events::table
            .select(AuditRow::as_select())
            .filter(audit_events::id.gt(after))
            .order(audit_events::id.asc())
            .limit(limit)
            .load(conn)
            .await
            .map_err(query_error))?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// Deletes up to `batch` of the oldest events from before `cutoff`;
    /// returns how many. Replicas may run it at once: each row goes once.
    pub(crate) async fn delete_audit_events_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<usize, Error> {
        with_conn!(self, |conn| {
            let expired: Vec<i64> = audit_events::table
                .select(audit_events::id)
                .filter(audit_events::occurred_at.lt(cutoff.naive_utc()))
                .order(audit_events::id.asc())
                .limit(batch)
                .load(conn)
                .await
                .map_err(query_error)?;
            diesel::delete(audit_events::table.filter(audit_events::id.eq_any(expired)))
                .execute(conn)
                .await
                .map_err(query_error)
        })
    }
}
