-- Times are UTC, stored without a zone so that PostgreSQL and SQLite share
-- one schema in the application.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);

-- The email is stored normalized (NFKC, lowercase), so this index is what
-- makes "one account per address" hold even under concurrent signups.
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    private_key_pem TEXT NOT NULL,
    active          BOOLEAN NOT NULL,
    created_at      TIMESTAMP NOT NULL
);

-- At most one active key: replicas that start together race to insert one
-- and all end up signing with the winner's.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;
