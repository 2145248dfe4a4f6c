-- A user's TOTP secret (RFC 6238): sealed under the key-encryption key when
-- one is configured, like signing keys. Pending until enabled_at is set; a
-- new enrollment replaces a pending one. last_step is the last time step a
-- code was accepted for, so no code works twice.
CREATE TABLE totp_secrets (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret     TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    enabled_at TIMESTAMP,
    last_step  BIGINT NOT NULL DEFAULT 0
);

-- One-time recovery codes, only as SHA-256 hashes; a used one is deleted.
CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

-- Logins waiting for their second factor, by the SHA-256 of the mfa_token.
-- The password version ties each to the password that was checked.
CREATE TABLE mfa_challenges (
    token_hash       TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_version BIGINT NOT NULL,
    created_at       TIMESTAMP NOT NULL,
    expires_at       TIMESTAMP NOT NULL
);

CREATE INDEX mfa_challenges_user_id_idx ON mfa_challenges (user_id, created_at);
CREATE INDEX mfa_challenges_expires_at_idx ON mfa_challenges (expires_at);

-- How the session's user authenticated (RFC 8176 values, space separated),
-- so Refresh issues the same amr claim Login did.
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
