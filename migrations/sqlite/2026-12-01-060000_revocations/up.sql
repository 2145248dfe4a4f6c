-- One row per ended session, the feed replicas and WatchRevocations read by
-- id. No foreign keys: a row must outlive its session and user until every
-- access token of the session has expired (not_after).
CREATE TABLE revocations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    revoked_at TEXT NOT NULL,
    not_after  TEXT NOT NULL
) STRICT;

CREATE INDEX revocations_not_after_idx ON revocations (not_after);
