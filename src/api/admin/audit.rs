//! The audit-trail RPCs of AdminService.

use futures_util::{StreamExt, stream::BoxStream};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{AdminApi, paging, pb};
use crate::{
    api::convert::{self, Violations, time, timestamp},
    domain::{
        Error,
        audit::{AuditFilter, EventType, RecordedEvent},
    },
};

pub(crate) type EventStream = BoxStream<'static, Result<pb::WatchAuditEventsResponse, Status>>;

pub(super) async fn list_audit_events(
    api: &AdminApi,
    request: Request<pb::ListAuditEventsRequest>,
) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
    api.caller(&request).await?;
    let request = request.into_inner();
    let (filter, page_size, before) = parse_list(&request)?;
    let (events, next) = api.audit.list(&filter, before, page_size).await?;
    Ok(Response::new(pb::ListAuditEventsResponse {
        events: events.into_iter().map(audit_event).collect(),
        next_page_token: next
            .map(|cursor| paging::next_page_token(cursor, &filters(&request)))
            .unwrap_or_default(),
    }))
}

pub(super) async fn watch_audit_events(
    api: &AdminApi,
    request: Request<pb::WatchAuditEventsRequest>,
) -> Result<Response<EventStream>, Status> {
    api.caller(&request).await?;
    let cursor = parse_cursor(&request.get_ref().cursor)?;
    let events = api.audit.watch(cursor)?.map(|event| {
        event
            .map(|event| pb::WatchAuditEventsResponse {
                event: Some(audit_event(event)),
            })
            .map_err(Status::from)
    });
    Ok(Response::new(events.boxed()))
}

/// The request's filters as text, which its page tokens are bound to.
fn filters(request: &pb::ListAuditEventsRequest) -> [String; 5] {
    let time = |t: &Option<prost_types::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    [
        request.user_id.clone(),
        request.actor_id.clone(),
        request.r#type.clone(),
        time(&request.since),
        time(&request.until),
    ]
}

fn parse_list(
    request: &pb::ListAuditEventsRequest,
) -> Result<(AuditFilter, usize, Option<i64>), Error> {
    let mut violations = Violations::default();
    let page_size = violations.check("page_size", paging::page_size(request.page_size));
    let user_id = violations.check("user_id", optional_uuid(&request.user_id));
    let actor_id = violations.check("actor_id", actor_id(&request.actor_id));
    let kind = violations.check("type", event_type(&request.r#type));
    let since = violations.check("since", time(request.since));
    let until = violations.check("until", time(request.until));
    let before = violations.check(
        "page_token",
        paging::position(&request.page_token, &filters(request)),
    );
    violations.finish()?;
    let filter = AuditFilter {
        user_id: user_id.flatten(),
        actor_id: actor_id.flatten(),
        kind: kind.flatten(),
        since: since.flatten(),
        until: until.flatten(),
    };
    Ok((filter, page_size.unwrap_or_default(), before.flatten()))
}

fn optional_uuid(raw: &str) -> Result<Option<Uuid>, &'static str> {
    if raw.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(raw)
        .map(Some)
        .map_err(|_| "must be an id (a UUID)")
}

fn actor_id(raw: &str) -> Result<Option<String>, &'static str> {
    match raw {
        "" => Ok(None),
        "system" => Ok(Some(raw.to_owned())),
        _ => Uuid::parse_str(raw)
            .map(|id| Some(id.to_string()))
            .map_err(|_| "must be a user or service account id, or \"system\""),
    }
}

fn event_type(raw: &str) -> Result<Option<EventType>, &'static str> {
    if raw.is_empty() {
        return Ok(None);
    }
    EventType::parse(raw)
        .map(Some)
        .ok_or("is not an audit event type (see admin.proto)")
}

/// A WatchAuditEvents cursor: empty for the start of the trail.
fn parse_cursor(raw: &str) -> Result<i64, Error> {
    Ok(convert::cursor(raw, "is not a cursor of an audit event")?.unwrap_or_default())
}

fn audit_event(event: RecordedEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        cursor: event.cursor.to_string(),
        time: Some(timestamp(event.time)),
        r#type: event.kind,
        actor_id: event.actor_id.unwrap_or_default(),
        user_id: event.user_id.unwrap_or_default(),
        session_id: event.session_id.unwrap_or_default(),
        client_address: event.client_address.unwrap_or_default(),
        request_id: event.request_id.unwrap_or_default(),
        details: event.details.into_iter().collect(),
        actor_type: event.actor_type.unwrap_or_default(),
    }
}
