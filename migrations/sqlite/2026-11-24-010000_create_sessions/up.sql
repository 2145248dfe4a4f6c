-- A session is one login on one device. Revoking it ends its refresh tokens
-- and, at authd, its access tokens.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
) STRICT;

CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Refresh tokens are stored only as SHA-256 hashes. A rotated token keeps
-- its successor sealed with a pad derived from the rotated token itself, so
-- a client that raced itself can be handed the same successor again without
-- the database ever holding a usable token. successor_hash finds it.
CREATE TABLE refresh_tokens (
    token_hash       TEXT PRIMARY KEY NOT NULL,
    session_id       TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    rotated_at       TEXT,
    successor_hash   TEXT,
    successor_sealed TEXT
) STRICT;

CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
