//! WatchRevocations: the cursor a watcher resumes from, and the entries it
//! is sent.

use futures_util::{Stream, StreamExt, stream::BoxStream};
use tonic::Status;

use super::{
    convert::{self, timestamp},
    proto::WatchRevocationsResponse,
};
use crate::{
    core::revocations::FeedEntry,
    domain::{Error, session::Revocation},
};

pub(crate) type EntryStream = BoxStream<'static, Result<WatchRevocationsResponse, Status>>;

/// A cursor this server sent, or none when empty.
pub(super) fn cursor(raw: &str) -> Result<Option<i64>, Error> {
    convert::cursor(raw, "is not a cursor this server sent")
}

pub(super) fn entries(
    entries: impl Stream<Item = Result<FeedEntry, Error>> + Send + 'static,
) -> EntryStream {
    entries
        .map(|entry| entry.map(entry_message).map_err(Status::from))
        .boxed()
}

fn entry_message(entry: FeedEntry) -> WatchRevocationsResponse {
    match entry {
        FeedEntry::Revoked(Revocation {
            cursor,
            session_id,
            user_id: _,
            revoked_at,
            not_after,
        }) => WatchRevocationsResponse {
            cursor: cursor.to_string(),
            session_id: session_id.to_string(),
            revoked_at: Some(timestamp(revoked_at)),
            not_after: Some(timestamp(not_after)),
        },
        FeedEntry::Heartbeat(cursor) => WatchRevocationsResponse {
            cursor: cursor.to_string(),
            ..WatchRevocationsResponse::default()
        },
    }
}
