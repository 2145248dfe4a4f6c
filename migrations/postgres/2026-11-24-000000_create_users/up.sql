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

-- Signing keys. Each rotation adds the next generation; the unique index
-- makes replicas that bootstrap or rotate at the same moment agree on one
-- key per generation. A key signs from activates_at until the next
-- generation activates, and verifies for one token lifetime after that.
CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    private_key_pem TEXT NOT NULL,
    generation      BIGINT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    activates_at    TIMESTAMP NOT NULL
);

CREATE UNIQUE INDEX signing_keys_generation_key ON signing_keys (generation);
