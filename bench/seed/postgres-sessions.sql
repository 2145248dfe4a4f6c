-- Users and sessions for the peak-RSS measurement, written straight into the
-- database. bench/run.sh first creates the table seed_counts (users, live,
-- revoked). Session n belongs to user 1 + n % users; the first `live` ones
-- are live, the rest revoked a minute ago (access tokens live 15 minutes by
-- default, so every revoked one is still unexpired).
CREATE TEMP TABLE seed_users AS
SELECT n, gen_random_uuid()::text AS id
FROM generate_series(1, (SELECT users FROM seed_counts)) AS n;

INSERT INTO users (id, email, email_key, username, password_hash, created_at, updated_at)
SELECT id, 'seed-' || n || '@example.com', 'seed-' || n || '@example.com', 'seed',
       'seeded: never logs in', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
FROM seed_users;

INSERT INTO sessions (id, user_id, created_at, last_used_at, revoked_at)
SELECT gen_random_uuid()::text, u.id,
       now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC',
       CASE WHEN s.n >= c.live THEN now() AT TIME ZONE 'UTC' - interval '1 minute' END
FROM seed_counts c
CROSS JOIN generate_series(0, (SELECT live + revoked - 1 FROM seed_counts)) AS s(n)
JOIN seed_users u ON u.n = 1 + s.n % c.users;
