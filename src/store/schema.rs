//! One schema for both backends. Ids are UUID text and times are UTC
//! `TIMESTAMP`s so that every query body compiles for PostgreSQL and SQLite
//! alike.

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        username -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        private_key_pem -> Text,
        active -> Bool,
        created_at -> Timestamp,
    }
}
