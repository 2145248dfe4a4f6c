ALTER TABLE signing_keys RENAME COLUMN private_key TO private_key_pem;
