-- A stored private key is PKCS#8 PEM, or, with a key-encryption key,
-- encrypted under it (authd-kek-v1:...): no longer always PEM.
ALTER TABLE signing_keys RENAME COLUMN private_key_pem TO private_key;
