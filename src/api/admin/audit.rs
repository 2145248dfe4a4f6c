//! The audit-trail RPCs of AdminService.

use futures_util::stream::BoxStream;
use tonic::{Request, Response, Status};

use super::{AdminApi, pb};

pub(crate) type EventStream = BoxStream<'static, Result<pb::WatchAuditEventsResponse, Status>>;

pub(super) async fn list_audit_events(
    api: &AdminApi,
    request: Request<pb::ListAuditEventsRequest>,
) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
    api.caller(&request).await?;
    let _ = &api.audit;
    Err(Status::unimplemented("not implemented yet"))
}

pub(super) async fn watch_audit_events(
    api: &AdminApi,
    request: Request<pb::WatchAuditEventsRequest>,
) -> Result<Response<EventStream>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("not implemented yet"))
}
