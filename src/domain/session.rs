//! What a session records about the device it lives on.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The longest user agent kept: enough for any real client, bounded
/// whatever a client sends.
const USER_AGENT_MAX_BYTES: usize = 256;

/// The name a user gives a device at Login, under the rules of a username
/// (see [`super::Username`]), except that it may be empty: then there is
/// none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceLabel(String);

impl DeviceLabel {
    pub(crate) fn parse(raw: &str) -> Result<Option<Self>, &'static str> {
        let label = super::visible_name(raw)?;
        Ok((!label.is_empty()).then(|| Self(label.to_owned())))
    }

    /// A label read back from the database, where only parsed ones are
    /// written.
    pub(crate) fn from_stored(label: String) -> Self {
        Self(label)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `user-agent` a client sent: informative only, so it is cleaned
/// rather than refused. Control characters would garble a terminal or a
/// log line and are dropped; the rest is cut on a character boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserAgent(String);

impl UserAgent {
    pub(crate) fn clean(raw: &str) -> Option<Self> {
        let mut agent = String::new();
        for c in raw.chars().filter(|c| !c.is_control()) {
            if agent.len() + c.len_utf8() > USER_AGENT_MAX_BYTES {
                break;
            }
            agent.push(c);
        }
        let agent = agent.trim();
        (!agent.is_empty()).then(|| Self(agent.to_owned()))
    }

    pub(crate) fn from_stored(agent: String) -> Self {
        Self(agent)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a Login came from, kept with its session.
#[derive(Debug, Clone, Default)]
pub(crate) struct Device {
    pub(crate) client_address: Option<IpAddr>,
    pub(crate) user_agent: Option<UserAgent>,
    pub(crate) label: Option<DeviceLabel>,
}

/// One of a user's sessions, as ListSessions shows it.
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    pub(crate) id: Uuid,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) last_used_at: DateTime<Utc>,
    /// The address as stored: text, since it is only ever shown.
    pub(crate) client_address: Option<String>,
    pub(crate) user_agent: Option<UserAgent>,
    pub(crate) label: Option<DeviceLabel>,
}

/// An ended session as the revocation feed carries it: `cursor` orders the
/// feed, and after `not_after` every access token of the session has
/// expired, so the revocation may be forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Revocation {
    pub(crate) cursor: i64,
    pub(crate) session_id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) revoked_at: DateTime<Utc>,
    pub(crate) not_after: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_is_optional_trimmed_and_bounded() {
        assert_eq!(DeviceLabel::parse("   "), Ok(None));
        assert_eq!(
            DeviceLabel::parse(" Work laptop ").map(|l| l.map(|l| l.0)),
            Ok(Some("Work laptop".into()))
        );
        assert!(DeviceLabel::parse(&"é".repeat(64)).is_ok());
        assert!(DeviceLabel::parse(&"x".repeat(65)).is_err());
        assert!(DeviceLabel::parse("a\u{200B}b").is_err());
    }

    #[test]
    fn user_agent_drops_controls_and_is_cut_on_a_char_boundary() {
        assert_eq!(
            UserAgent::clean("app/1.0\r\n\u{7}x").map(|a| a.0),
            Some("app/1.0x".into())
        );
        let long = UserAgent::clean(&format!("a{}", "é".repeat(200))).map(|a| a.0);
        assert_eq!(long.as_ref().map(String::len), Some(255));
        assert_eq!(UserAgent::clean("\u{1}\u{2}"), None);
    }
}
