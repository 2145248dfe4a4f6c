//! ListSessions and RevokeSession at the edge: what a Login records of its
//! device, and sessions as clients see them.

use tonic::Request;
use uuid::Uuid;

use super::{
    convert::{self, Violations},
    listener, proto,
};
use crate::domain::{
    Error,
    session::{Device, SessionInfo, UserAgent},
};

/// The device a Login comes from: its peer address and its `user-agent`.
/// The label is in the message.
pub(super) fn device<T>(request: &Request<T>) -> Device {
    Device {
        client_address: listener::peer(request.extensions()).map(|addr| addr.ip()),
        user_agent: request
            .metadata()
            .get("user-agent")
            .and_then(|agent| agent.to_str().ok())
            .and_then(UserAgent::clean),
        label: None,
    }
}

pub(super) fn session_id(raw: &str) -> Result<Uuid, Error> {
    let mut violations = Violations::default();
    let id = violations.check(
        "session_id",
        Uuid::parse_str(raw).map_err(|_| "must be a session id from ListSessions"),
    );
    violations.into_result(id)
}

pub(super) fn list(sessions: Vec<SessionInfo>, current: Uuid) -> proto::ListSessionsResponse {
    proto::ListSessionsResponse {
        sessions: sessions
            .into_iter()
            .map(|session| proto::Session {
                id: session.id.to_string(),
                created_at: Some(convert::timestamp(session.created_at)),
                last_used_at: Some(convert::timestamp(session.last_used_at)),
                client_address: session.client_address.unwrap_or_default(),
                user_agent: session
                    .user_agent
                    .map(|agent| agent.as_str().to_owned())
                    .unwrap_or_default(),
                device_label: session
                    .label
                    .map(|label| label.as_str().to_owned())
                    .unwrap_or_default(),
                current: session.id == current,
            })
            .collect(),
    }
}
