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

-- Sessions ended before this table existed may still have unexpired access
-- tokens. The token lifetime is not known here, so they are kept for its
-- maximum (a day) plus the verifiers' leeway: longer than needed, never
-- shorter.
INSERT INTO revocations (session_id, user_id, revoked_at, not_after)
SELECT id, user_id, revoked_at,
       strftime('%Y-%m-%d %H:%M:%f', revoked_at, '+1 day', '+10 seconds')
FROM sessions
WHERE revoked_at > strftime('%Y-%m-%d %H:%M:%f', 'now', '-1 day', '-10 seconds')
ORDER BY revoked_at;
