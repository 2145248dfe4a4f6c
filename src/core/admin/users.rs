//! Managing users as an operator.

use uuid::Uuid;

use super::{Admin, By};
use crate::{
    core::passwords::Owner,
    domain::{
        Email, Error, Password, PasswordHash, Role, Roles, User, UserFilter, Username,
        audit::{Actor, AuditEvent, EventType, Origin},
        session::SessionInfo,
    },
    store::{Database, NewUserRecord, UserChange},
};

/// How GetUser names a user.
pub(crate) enum UserKey {
    Id(Uuid),
    /// Any spelling of the mailbox, as at Login.
    Email(Email),
}

/// A user an operator creates.
pub(crate) struct NewAccount {
    pub(crate) email: Email,
    pub(crate) username: Username,
    /// None: the account cannot log in until SetPassword gives it one.
    pub(crate) password: Option<Password>,
    pub(crate) roles: Roles,
    pub(crate) email_verified: bool,
}

/// The fields UpdateUser applies, and the names of the fields it was asked
/// to apply, for the audit trail.
#[derive(Default)]
pub(crate) struct UserUpdate {
    pub(crate) username: Option<Username>,
    pub(crate) email: Option<Email>,
    pub(crate) roles: Option<Roles>,
    pub(crate) email_verified: Option<bool>,
    pub(crate) fields: Vec<&'static str>,
}

/// One page of a user listing, and whether more users follow it.
pub(crate) struct UserPage {
    pub(crate) users: Vec<User>,
    pub(crate) more: bool,
}

/// What granting or revoking a role did.
pub(crate) struct RoleChange {
    pub(crate) user: User,
    /// False when the user already had (or already lacked) the role.
    pub(crate) changed: bool,
}

fn roles_changed(actor: Actor, origin: &Origin, user_id: Uuid, roles: &Roles) -> AuditEvent {
    AuditEvent::new(EventType::RolesChanged, actor, origin)
        .user(user_id)
        .detail("roles", roles.to_stored())
}

fn not_found() -> Error {
    Error::NotFound("user")
}

async fn change<F>(db: &Database, id: Uuid, decide: F) -> Result<User, Error>
where
    F: FnOnce(&User) -> UserChange + Send + 'static,
{
    db.change_user(id, decide).await?.ok_or_else(not_found)
}

/// Grants or revokes one role of the user with this email, as the command
/// line does, which needs no hashing stage: the actor is the system.
/// Nothing is written when the role is already as asked.
pub(crate) async fn change_role(
    db: &Database,
    email: &Email,
    role: Role,
    grant: bool,
) -> Result<RoleChange, Error> {
    let (user, _) = db.find_user_by_email(email).await?.ok_or_else(not_found)?;
    let had = user.roles.contains(role.as_str());
    let name = role.as_str().to_owned();
    let user = change(db, user.id, move |before| {
        let mut roles = before.roles.clone();
        let changed = if grant {
            roles.insert(role)
        } else {
            roles.remove(&role)
        };
        if !changed {
            return UserChange::default();
        }
        let event = roles_changed(Actor::System, &Origin::default(), before.id, &roles);
        UserChange {
            roles: Some(roles),
            events: vec![event],
            ..UserChange::default()
        }
    })
    .await?;
    let changed = had != user.roles.contains(&name);
    Ok(RoleChange { user, changed })
}

impl Admin {
    /// Up to `page_size` users after `after`, oldest first. One more is read
    /// to tell whether another page follows.
    pub(crate) async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<Uuid>,
        page_size: usize,
    ) -> Result<UserPage, Error> {
        let limit = i64::try_from(page_size + 1).map_err(Error::internal)?;
        let mut users = self.db.list_users(filter, after, limit).await?;
        let more = users.len() > page_size;
        users.truncate(page_size);
        Ok(UserPage { users, more })
    }

    pub(crate) async fn get_user(&self, key: UserKey) -> Result<User, Error> {
        let user = match key {
            UserKey::Id(id) => self.db.find_user(id).await?,
            UserKey::Email(email) => self
                .db
                .find_user_by_email(&email)
                .await?
                .map(|(user, _)| user),
        };
        user.ok_or_else(not_found)
    }

    /// A taken mailbox is refused before any hashing; the unique index
    /// still decides a race. The password is screened as at Signup.
    pub(crate) async fn create_user(&self, by: By<'_>, new: NewAccount) -> Result<User, Error> {
        let By { actor, origin } = by;
        if let Some(password) = &new.password {
            let owner = Owner {
                email: &new.email,
                username: &new.username,
            };
            self.passwords.check("password", password, owner).await?;
        }
        if self.db.email_taken(&new.email).await? {
            return Err(Error::EmailTaken);
        }
        let password_hash = match &new.password {
            Some(password) => Some(self.hash(password).await?),
            None => None,
        };
        let id = Uuid::now_v7();
        let mut events = vec![AuditEvent::new(EventType::UserCreated, actor, origin).user(id)];
        if new.roles.names().next().is_some() {
            events.push(roles_changed(actor, origin, id, &new.roles));
        }
        self.db
            .insert_user(NewUserRecord {
                id,
                email: new.email,
                username: new.username,
                password_hash,
                roles: new.roles,
                email_verified: new.email_verified,
                verification: None,
                events,
            })
            .await
    }

    /// Applies `update`. `roles.changed` is recorded only when the roles
    /// really differ, so the trail shows when access changed.
    pub(crate) async fn update_user(
        &self,
        by: By<'_>,
        id: Uuid,
        update: UserUpdate,
    ) -> Result<User, Error> {
        let By { actor, origin } = by;
        let origin = origin.clone();
        self.change(id, move |before| {
            let mut events = vec![
                AuditEvent::new(EventType::UserUpdated, actor, &origin)
                    .user(id)
                    .detail("fields", update.fields.join(",")),
            ];
            if let Some(roles) = &update.roles
                && *roles != before.roles
            {
                events.push(roles_changed(actor, &origin, id, roles));
            }
            UserChange {
                email: update.email,
                username: update.username,
                roles: update.roles,
                email_verified: update.email_verified,
                events,
                ..UserChange::default()
            }
        })
        .await
    }

    /// Deletes the user; the audit event keeps only the id.
    pub(crate) async fn delete_user(&self, by: By<'_>, id: Uuid) -> Result<(), Error> {
        let By { actor, origin } = by;
        let event = AuditEvent::new(EventType::UserDeleted, actor, origin).user(id);
        if self.db.delete_user(id, vec![event]).await? {
            self.revocations.user_changed(id);
            self.revocations.settle().await;
            Ok(())
        } else {
            Err(not_found())
        }
    }

    /// Disables the user and ends their sessions in one transaction, so no
    /// token of theirs works after it commits.
    pub(crate) async fn disable_user(&self, by: By<'_>, id: Uuid) -> Result<User, Error> {
        let By { actor, origin } = by;
        let event = AuditEvent::new(EventType::UserDisabled, actor, origin).user(id);
        self.change(id, move |before| UserChange {
            // Disabling again keeps the time it was first disabled.
            disabled: (!before.disabled).then_some(true),
            revoke_sessions: true,
            events: vec![event],
            ..UserChange::default()
        })
        .await
    }

    pub(crate) async fn enable_user(&self, by: By<'_>, id: Uuid) -> Result<User, Error> {
        let By { actor, origin } = by;
        let event = AuditEvent::new(EventType::UserEnabled, actor, origin).user(id);
        self.change(id, move |_| UserChange {
            disabled: Some(false),
            events: vec![event],
            ..UserChange::default()
        })
        .await
    }

    /// Screens the password against the user's own data as at Signup,
    /// hashes outside any transaction, then stores the hash, bumps the
    /// password version (so a login that verified the old one opens no
    /// session) and ends every session.
    pub(crate) async fn set_password(
        &self,
        by: By<'_>,
        id: Uuid,
        password: Password,
    ) -> Result<(), Error> {
        let By { actor, origin } = by;
        let user = self.db.find_user(id).await?.ok_or_else(not_found)?;
        self.passwords
            .check("password", &password, Owner::of(&user))
            .await?;
        let hash = self.hash(&password).await?;
        let event = AuditEvent::new(EventType::PasswordSet, actor, origin).user(id);
        self.change(id, move |_| UserChange {
            password_hash: Some(hash),
            revoke_sessions: true,
            events: vec![event],
            ..UserChange::default()
        })
        .await
        .map(drop)
    }

    /// Removes the user's TOTP, recovery codes and pending Login challenges,
    /// for a user who lost their authenticator: the next Login asks for the
    /// password only. Their sessions are kept.
    pub(crate) async fn reset_totp(&self, by: By<'_>, id: Uuid) -> Result<(), Error> {
        if self.db.find_user(id).await?.is_none() {
            return Err(not_found());
        }
        let By { actor, origin } = by;
        let event = AuditEvent::new(EventType::TotpReset, actor, origin).user(id);
        self.db.reset_totp(id, event).await
    }

    /// The user's live sessions, newest first, judged by the same limits
    /// as the user's own ListSessions.
    pub(crate) async fn user_sessions(&self, id: Uuid) -> Result<Vec<SessionInfo>, Error> {
        if self.db.find_user(id).await?.is_none() {
            return Err(not_found());
        }
        self.db.user_sessions(id, self.sessions.liveness()).await
    }

    pub(crate) async fn revoke_user_sessions(&self, by: By<'_>, id: Uuid) -> Result<(), Error> {
        let By { actor, origin } = by;
        let event = AuditEvent::new(EventType::SessionRevoked, actor, origin)
            .user(id)
            .detail("reason", "admin");
        self.change(id, move |_| UserChange {
            revoke_sessions: true,
            events: vec![event],
            ..UserChange::default()
        })
        .await
        .map(drop)
    }

    /// Any change may have ended sessions (disable, SetPassword, revoke),
    /// which this replica refuses from the next call on, and its cached
    /// profile is outdated.
    async fn change<F>(&self, id: Uuid, decide: F) -> Result<User, Error>
    where
        F: FnOnce(&User) -> UserChange + Send + 'static,
    {
        let user = change(&self.db, id, decide).await?;
        self.revocations.user_changed(id);
        self.revocations.settle().await;
        Ok(user)
    }

    async fn hash(&self, password: &Password) -> Result<PasswordHash, Error> {
        let slot = self.hasher.slot().await?;
        self.hasher.hash(slot, password).await
    }
}
