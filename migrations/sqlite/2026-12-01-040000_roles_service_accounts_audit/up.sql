-- Roles are space-separated (a role never contains a space), sorted, so a
-- user's roles are one read with the user and a filter is one LIKE.
ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT '';
-- Set while an operator has disabled the account.
ALTER TABLE users ADD COLUMN disabled_at TEXT;
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;

-- Machine identities. Their tokens name them in "sub" and "client_id".
CREATE TABLE service_accounts (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    roles      TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
) STRICT;

CREATE UNIQUE INDEX service_accounts_name_key ON service_accounts (name);

-- API keys are stored only as SHA-256 hashes: a key is 256 random bits, so
-- a fast hash is enough and lookup by hash is one index probe.
CREATE TABLE api_keys (
    id                 TEXT PRIMARY KEY NOT NULL,
    service_account_id TEXT NOT NULL REFERENCES service_accounts (id) ON DELETE CASCADE,
    key_hash           TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    expires_at         TEXT,
    revoked_at         TEXT,
    last_used_at       TEXT
) STRICT;

CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_service_account_id_idx ON api_keys (service_account_id);

-- The audit trail. id is the cursor: AUTOINCREMENT never reuses an id, even
-- after retention deleted the newest rows, and SQLite's single writer makes
-- ids visible in increasing order. No foreign keys: events outlive the
-- users and sessions they name.
CREATE TABLE audit_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at    TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    actor_type     TEXT,
    actor_id       TEXT,
    user_id        TEXT,
    session_id     TEXT,
    client_address TEXT,
    request_id     TEXT,
    details        TEXT NOT NULL DEFAULT '{}'
) STRICT;

CREATE INDEX audit_events_occurred_at_idx ON audit_events (occurred_at);
CREATE INDEX audit_events_user_id_idx ON audit_events (user_id, id);
CREATE INDEX audit_events_actor_id_idx ON audit_events (actor_id, id);
CREATE INDEX audit_events_event_type_idx ON audit_events (event_type, id);
