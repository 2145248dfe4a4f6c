DROP TABLE audit_events;
DROP TABLE api_keys;
DROP TABLE service_accounts;
ALTER TABLE users DROP COLUMN email_verified;
ALTER TABLE users DROP COLUMN disabled_at;
ALTER TABLE users DROP COLUMN roles;
