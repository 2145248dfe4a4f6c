//! The audit trail's vocabulary: what happened, who did it, and from where.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Every kind of event authd records. The names are part of the contract
/// (listed in `admin.proto`) and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    UserSignedUp,
    LoginSucceeded,
    LoginFailed,
    LoginThrottled,
    RefreshReuseDetected,
    SessionRevoked,
    PasswordChanged,
    PasswordSet,
    PasswordResetRequested,
    PasswordReset,
    UserCreated,
    UserUpdated,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    RolesChanged,
    ServiceAccountCreated,
    ServiceAccountDeleted,
    ApiKeyCreated,
    ApiKeyRevoked,
    ServiceTokenIssued,
    SigningKeyRotated,
    TotpEnrolled,
    TotpEnabled,
    TotpDisabled,
    TotpReset,
    RecoveryCodesRegenerated,
    RecoveryCodeUsed,
}

impl EventType {
    pub(crate) const ALL: [Self; 28] = [
        Self::UserSignedUp,
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::LoginThrottled,
        Self::RefreshReuseDetected,
        Self::SessionRevoked,
        Self::PasswordChanged,
        Self::PasswordSet,
        Self::PasswordResetRequested,
        Self::PasswordReset,
        Self::UserCreated,
        Self::UserUpdated,
        Self::UserDisabled,
        Self::UserEnabled,
        Self::UserDeleted,
        Self::RolesChanged,
        Self::ServiceAccountCreated,
        Self::ServiceAccountDeleted,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::ServiceTokenIssued,
        Self::SigningKeyRotated,
        Self::TotpEnrolled,
        Self::TotpEnabled,
        Self::TotpDisabled,
        Self::TotpReset,
        Self::RecoveryCodesRegenerated,
        Self::RecoveryCodeUsed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::UserSignedUp => "user.signed_up",
            Self::LoginSucceeded => "login.succeeded",
            Self::LoginFailed => "login.failed",
            Self::LoginThrottled => "login.throttled",
            Self::RefreshReuseDetected => "refresh.reuse_detected",
            Self::SessionRevoked => "session.revoked",
            Self::PasswordChanged => "password.changed",
            Self::PasswordSet => "password.set",
            Self::PasswordResetRequested => "password_reset.requested",
            Self::PasswordReset => "password.reset",
            Self::UserCreated => "user.created",
            Self::UserUpdated => "user.updated",
            Self::UserDisabled => "user.disabled",
            Self::UserEnabled => "user.enabled",
            Self::UserDeleted => "user.deleted",
            Self::RolesChanged => "roles.changed",
            Self::ServiceAccountCreated => "service_account.created",
            Self::ServiceAccountDeleted => "service_account.deleted",
            Self::ApiKeyCreated => "api_key.created",
            Self::ApiKeyRevoked => "api_key.revoked",
            Self::ServiceTokenIssued => "service_token.issued",
            Self::SigningKeyRotated => "signing_key.rotated",
            Self::TotpEnrolled => "totp.enrolled",
            Self::TotpEnabled => "totp.enabled",
            Self::TotpDisabled => "totp.disabled",
            Self::TotpReset => "totp.reset",
            Self::RecoveryCodesRegenerated => "recovery_codes.regenerated",
            Self::RecoveryCodeUsed => "recovery_code.used",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Who did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Actor {
    User(Uuid),
    ServiceAccount(Uuid),
    /// authd itself, or an operator at its command line.
    System,
    /// Nobody known, e.g. a Login with a wrong password.
    Anonymous,
}

impl Actor {
    /// The stored pair: type and id.
    pub(crate) fn parts(self) -> (Option<&'static str>, Option<String>) {
        match self {
            Self::User(id) => (Some("user"), Some(id.to_string())),
            Self::ServiceAccount(id) => (Some("service_account"), Some(id.to_string())),
            Self::System => (Some("system"), Some("system".to_owned())),
            Self::Anonymous => (None, None),
        }
    }
}

/// Where a call came from, as far as authd can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) client_address: Option<IpAddr>,
    /// The call's `x-request-id`, already checked to be short, printable
    /// ASCII.
    pub(crate) request_id: Option<String>,
}

/// An event to record, written in the same transaction as the change it
/// describes. Details are small facts chosen by authd's code, never a
/// password, token, email or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditEvent {
    pub(crate) kind: EventType,
    pub(crate) actor: Actor,
    pub(crate) user_id: Option<Uuid>,
    pub(crate) session_id: Option<Uuid>,
    pub(crate) origin: Origin,
    pub(crate) details: Vec<(&'static str, String)>,
}

impl AuditEvent {
    pub(crate) fn new(kind: EventType, actor: Actor, origin: &Origin) -> Self {
        Self {
            kind,
            actor,
            user_id: None,
            session_id: None,
            origin: origin.clone(),
            details: Vec::new(),
        }
    }

    pub(crate) fn user(self, user_id: Uuid) -> Self {
        Self {
            user_id: Some(user_id),
            ..self
        }
    }

    pub(crate) fn session(self, session_id: Uuid) -> Self {
        Self {
            session_id: Some(session_id),
            ..self
        }
    }

    pub(crate) fn detail(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.details.push((key, value.into()));
        self
    }
}

/// Which events ListAuditEvents wants; every set field must match.
#[derive(Debug, Default, Clone)]
pub(crate) struct AuditFilter {
    pub(crate) user_id: Option<Uuid>,
    pub(crate) actor_id: Option<String>,
    pub(crate) kind: Option<EventType>,
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) until: Option<DateTime<Utc>>,
}

/// An event as stored, read back for ListAuditEvents and WatchAuditEvents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordedEvent {
    /// Increases with every event, in commit order.
    pub(crate) cursor: i64,
    pub(crate) time: DateTime<Utc>,
    pub(crate) kind: String,
    pub(crate) actor_type: Option<String>,
    pub(crate) actor_id: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) session_id: Option<String>,
    pub(crate) client_address: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) details: std::collections::BTreeMap<String, String>,
}
