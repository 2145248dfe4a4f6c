//! The audit trail's table. Events are appended by the transaction that
//! makes the change they record ([`AppendAudit`]), so an event exists if and
//! only if its change committed.

use chrono::Utc;
use diesel::{prelude::*, result::Error as QueryError, sql_types::BigInt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{Database, SqliteAsync, query_error, run_detached, schema::audit_events, with_conn};
use crate::domain::{Error, audit::AuditEvent};

/// The transaction-scoped advisory lock every PostgreSQL audit insert takes.
/// Held from the insert (which draws the id) to the commit, it makes ids
/// commit in increasing order, across replicas: a reader that has seen id N
/// will never later find a committed id below N, which is what lets a
/// watcher resume after a cursor without gaps. Audited transactions take it
/// last, just before they commit, so it is held for a commit's time.
const AUDIT_LOCK_ID: i64 = 0x6175_7468_6401;

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
pub(super) struct NewAuditRow {
    occurred_at: chrono::NaiveDateTime,
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
