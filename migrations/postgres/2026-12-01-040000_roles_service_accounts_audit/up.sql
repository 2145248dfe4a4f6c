-- Roles are space-separated (a role never contains a space), sorted, so a
-- user's roles are one read with the user and a filter is one LIKE.
ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT '';
-- Set while an operator has disabled the account.
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMP;
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;

-- Machine identities. Their tokens name them in "sub" and "client_id".
CREATE TABLE service_accounts (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    roles      TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);

CREATE UNIQUE INDEX service_accounts_name_key ON service_accounts (name);

-- API keys are stored only as SHA-256 hashes: a key is 256 random bits, so
-- a fast hash is enough and lookup by hash is one index probe.
CREATE TABLE api_keys (
    id                 TEXT PRIMARY KEY,
    service_account_id TEXT NOT NULL REFERENCES service_accounts (id) ON DELETE CASCADE,
    key_hash           TEXT NOT NULL,
    created_at         TIMESTAMP NOT NULL,
    expires_at         TIMESTAMP,
    revoked_at         TIMESTAMP,
    last_used_at       TIMESTAMP
);

CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_service_account_id_idx ON api_keys (service_account_id);

-- The audit trail. id is the cursor: rows are inserted under a transaction
-- advisory lock held to commit, so ids become visible in increasing order
-- and a reader that resumes after an id misses nothing. No foreign keys:
-- events outlive the users and sessions they name.
CREATE TABLE audit_events (
    id             BIGSERIAL PRIMARY KEY,
    occurred_at    TIMESTAMP NOT NULL,
    event_type     TEXT NOT NULL,
    actor_type     TEXT,
    actor_id       TEXT,
    user_id        TEXT,
    session_id     TEXT,
    client_address TEXT,
    request_id     TEXT,
    details        TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_events_occurred_at_idx ON audit_events (occurred_at);
CREATE INDEX audit_events_user_id_idx ON audit_events (user_id, id);
CREATE INDEX audit_events_actor_id_idx ON audit_events (actor_id, id);
CREATE INDEX audit_events_event_type_idx ON audit_events (event_type, id);
