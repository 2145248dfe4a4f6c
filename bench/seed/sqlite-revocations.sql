-- The revocation feed's rows for the revoked seeded sessions, as
-- postgres-revocations.sql does for PostgreSQL.
INSERT INTO revocations (session_id, user_id, revoked_at, not_after)
SELECT id, user_id, revoked_at, strftime('%Y-%m-%d %H:%M:%f', revoked_at, '+15 minutes')
FROM sessions
WHERE revoked_at IS NOT NULL;
