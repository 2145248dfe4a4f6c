-- What a user sees of their sessions (ListSessions), and what the idle
-- timeout and the housekeeping judge by. A session's last use is its latest
-- refresh token's creation, so existing sessions are backfilled from there.
ALTER TABLE sessions ADD COLUMN last_used_at TIMESTAMP;
UPDATE sessions SET last_used_at = COALESCE(
    (SELECT MAX(refresh_tokens.created_at) FROM refresh_tokens
     WHERE refresh_tokens.session_id = sessions.id),
    created_at);
ALTER TABLE sessions ALTER COLUMN last_used_at SET NOT NULL;
ALTER TABLE sessions ADD COLUMN client_address TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN device_label TEXT;

CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at);
CREATE INDEX sessions_last_used_at_idx ON sessions (last_used_at);
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);
