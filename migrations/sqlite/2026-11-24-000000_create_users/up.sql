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

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    private_key_pem TEXT NOT NULL,
    active          INTEGER NOT NULL CHECK (active IN (0, 1)),
    created_at      TEXT NOT NULL
) STRICT;

CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;
