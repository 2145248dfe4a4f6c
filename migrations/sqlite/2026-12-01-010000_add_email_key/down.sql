DROP INDEX users_by_email_key;
ALTER TABLE users DROP COLUMN email_key;
