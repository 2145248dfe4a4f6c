-- The revocation feed's rows for the revoked seeded sessions, each
-- forgettable when its last access token expires (15 minutes, authd's
-- default token lifetime, after the revocation). bench/run.sh runs this only
-- where the table revocations exists.
INSERT INTO revocations (session_id, user_id, revoked_at, not_after)
SELECT id, user_id, revoked_at, revoked_at + interval '15 minutes'
FROM sessions
WHERE revoked_at IS NOT NULL;
