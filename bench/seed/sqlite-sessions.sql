-- Users and sessions for the peak-RSS measurement, as postgres-sessions.sql
-- does for PostgreSQL: bench/run.sh first creates the table seed_counts
-- (users, live, revoked); session n belongs to user 1 + n % users; the first
-- `live` ones are live, the rest revoked a minute ago. Timestamps are text in
-- the form diesel writes ("2026-12-01 06:00:00.123").
CREATE TEMP TABLE seed_users AS
WITH RECURSIVE seq(n) AS (
    SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < (SELECT users FROM seed_counts)
)
SELECT n, lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4'
    || substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-'
    || hex(randomblob(6))) AS id
FROM seq;

INSERT INTO users (id, email, email_key, username, password_hash, created_at, updated_at)
SELECT id, 'seed-' || n || '@example.com', 'seed-' || n || '@example.com', 'seed',
       'seeded: never logs in', strftime('%Y-%m-%d %H:%M:%f', 'now'),
       strftime('%Y-%m-%d %H:%M:%f', 'now')
FROM seed_users;

INSERT INTO sessions (id, user_id, created_at, last_used_at, revoked_at)
WITH RECURSIVE seq(n) AS (
    SELECT 0 UNION ALL SELECT n + 1 FROM seq
    WHERE n + 1 < (SELECT live + revoked FROM seed_counts)
)
SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4'
    || substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-'
    || hex(randomblob(6))),
       u.id, strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now'),
       CASE WHEN seq.n >= c.live THEN strftime('%Y-%m-%d %H:%M:%f', 'now', '-1 minute') END
FROM seq
CROSS JOIN seed_counts c
JOIN seed_users u ON u.n = 1 + seq.n % c.users;
