-- STRICT tables so SQLite enforces column types as PostgreSQL does.
-- Times are UTC text in diesel's timestamp format.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;

-- The email is stored normalized (NFKC, lowercase), so this index is what
-- makes "one account per address" hold even under concurrent signups.
CREATE UNIQUE INDEX users_email_key ON users (email);

-- Signing keys. Each rotation adds the next generation; the unique index
-- makes replicas that bootstrap or rotate at the same moment agree on one
-- key per generation. A key signs from activates_at until the next
-- generation activates, and verifies for one token lifetime after that.
CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    private_key_pem TEXT NOT NULL,
    generation      INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    activates_at    TEXT NOT NULL
) STRICT;

CREATE UNIQUE INDEX signing_keys_generation_key ON signing_keys (generation);
