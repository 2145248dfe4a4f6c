-- The email's comparison key (src/domain.rs: case-folded, IDNA domain,
-- look-alikes mapped): one mailbox, one key, one account. Nullable, since
-- only authd can compute it: authd fills it in for older rows right after
-- migrating, and refuses to start if two of them are one mailbox. Both
-- backends allow any number of NULLs in a unique index.
ALTER TABLE users ADD COLUMN email_key TEXT;
CREATE UNIQUE INDEX users_by_email_key ON users (email_key);
