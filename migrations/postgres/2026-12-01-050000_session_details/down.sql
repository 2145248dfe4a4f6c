DROP INDEX refresh_tokens_expires_at_idx;
DROP INDEX sessions_last_used_at_idx;
DROP INDEX sessions_revoked_at_idx;
ALTER TABLE sessions DROP COLUMN device_label;
ALTER TABLE sessions DROP COLUMN user_agent;
ALTER TABLE sessions DROP COLUMN client_address;
ALTER TABLE sessions DROP COLUMN last_used_at;
