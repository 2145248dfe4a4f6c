-- Bumped by every password change (never by a rehash of the same password):
-- a login or a change writes only if the version it verified is still the
-- current one, so no session outlives the password it was opened with.
ALTER TABLE users ADD COLUMN password_version BIGINT NOT NULL DEFAULT 0;
