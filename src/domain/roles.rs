//! Roles: what a user or service account may do. authd gives meaning to
//! [`ADMIN`] and [`AUDITOR`]; every other role is for the product's own
//! services, which read them from access tokens.

use std::collections::BTreeSet;

/// May call every AdminService RPC.
pub(crate) const ADMIN: &str = "admin";
/// May call AdminService's read-only RPCs.
pub(crate) const AUDITOR: &str = "auditor";

pub(crate) const ROLE_MAX_CHARS: usize = 64;
/// More roles than this on one account is a mistake, and every one of them
/// rides in every access token.
pub(crate) const MAX_ROLES: usize = 32;

/// A role name: `[a-z][a-z0-9_.:-]{0,63}`. Never contains a space, which is
/// what lets [`Roles`] be stored as one space-separated text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Role(String);

impl Role {
    pub(crate) fn parse(raw: &str) -> Result<Self, &'static str> {
        let mut chars = raw.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | '-')
            })
            && raw.len() <= ROLE_MAX_CHARS;
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err("each role must match [a-z][a-z0-9_.:-]{0,63}")
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of roles, sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Roles(BTreeSet<Role>);

impl Roles {
    /// Parses every role; duplicates collapse into one.
    pub(crate) fn parse<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Self, &'static str> {
        let roles = raw
            .into_iter()
            .map(Role::parse)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if roles.len() > MAX_ROLES {
            return Err("at most 32 roles");
        }
        Ok(Self(roles))
    }

    /// Reads the stored form, which only [`Roles::to_stored`] wrote.
    pub(crate) fn from_stored(stored: &str) -> Self {
        Self(
            stored
                .split(' ')
                .filter(|role| !role.is_empty())
                .map(|role| Role(role.to_owned()))
                .collect(),
        )
    }

    /// Space-separated, sorted.
    pub(crate) fn to_stored(&self) -> String {
        self.names().collect::<Vec<_>>().join(" ")
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(Role::as_str)
    }

    pub(crate) fn contains(&self, role: &str) -> bool {
        self.names().any(|name| name == role)
    }

    pub(crate) fn insert(&mut self, role: Role) -> bool {
        self.0.insert(role)
    }

    pub(crate) fn remove(&mut self, role: &Role) -> bool {
        self.0.remove(role)
    }

    pub(crate) fn to_vec(&self) -> Vec<String> {
        self.names().map(str::to_owned).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_grammar() {
        for good in ["admin", "a", "billing:read", "x.y_z-1", &"a".repeat(64)] {
            assert!(Role::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Admin", "1a", "a b", "a/b", "é", &"a".repeat(65), "-a"] {
            assert!(Role::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_form_round_trips_sorted_and_deduplicated() {
        let roles = Roles::parse(["b", "a", "b"]).expect("valid");
        assert_eq!(roles.to_stored(), "a b");
        assert_eq!(Roles::from_stored(&roles.to_stored()), roles);
        assert_eq!(Roles::from_stored(""), Roles::default());
    }
}
