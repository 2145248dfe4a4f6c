-- The transactional outbox: one row per mail, written by the transaction
-- that makes the change the mail announces, delivered afterwards by the
-- sender every replica runs. A row is due when next_attempt_at has passed
-- and no replica holds it (claimed_until unset or past). Once delivered,
-- sent_at is set and the bodies are emptied: they carry the link with the
-- raw token, which must not stay in the database after delivery. A mail
-- still undelivered at the give-up time keeps its row with gave_up_at set.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    text_body       TEXT NOT NULL,
    html_body       TEXT,
    message_id      TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    claimed_until   TIMESTAMP,
    sent_at         TIMESTAMP,
    gave_up_at      TIMESTAMP
);

CREATE INDEX outbox_due_idx ON outbox (next_attempt_at)
    WHERE sent_at IS NULL AND gave_up_at IS NULL;
-- The per-address limit of notices looks up an address's recent mail of a
-- kind on every taken-address Signup: an index, so its cost does not grow
-- with the outbox and tell a taken address from a free one.
CREATE INDEX outbox_recipient_idx ON outbox (recipient, kind, created_at);

-- Single-use tokens sent by mail, only as SHA-256 hashes, bound to their
-- purpose, their user and, for an email change, the new address.
CREATE TABLE mail_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL,
    new_email  TEXT,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at    TIMESTAMP
);

CREATE INDEX mail_tokens_user_idx ON mail_tokens (user_id, purpose);
-- The per-address limit of change links.
CREATE INDEX mail_tokens_new_email_idx ON mail_tokens (new_email, purpose, created_at);
CREATE INDEX mail_tokens_expires_at_idx ON mail_tokens (expires_at);
