//! One schema for both backends. Ids are UUID text and times are UTC
//! `TIMESTAMP`s so that every query body compiles for PostgreSQL and SQLite
//! alike.

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        email_key -> Nullable<Text>,
        username -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        password_version -> BigInt,
        roles -> Text,
        disabled_at -> Nullable<Timestamp>,
        email_verified -> Bool,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        private_key -> Text,
        generation -> BigInt,
        created_at -> Timestamp,
        activates_at -> Timestamp,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        last_used_at -> Timestamp,
        client_address -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        device_label -> Nullable<Text>,
        amr -> Text,
    }
}

diesel::table! {
    totp_secrets (user_id) {
        user_id -> Text,
        secret -> Text,
        created_at -> Timestamp,
        enabled_at -> Nullable<Timestamp>,
        last_step -> BigInt,
    }
}

diesel::table! {
    recovery_codes (user_id, code_hash) {
        user_id -> Text,
        code_hash -> Text,
    }
}

diesel::table! {
    mfa_challenges (token_hash) {
        token_hash -> Text,
        user_id -> Text,
        password_version -> BigInt,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        session_id -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        rotated_at -> Nullable<Timestamp>,
        successor_hash -> Nullable<Text>,
        successor_sealed -> Nullable<Text>,
    }
}

diesel::table! {
    service_accounts (id) {
        id -> Text,
        name -> Text,
        roles -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        service_account_id -> Text,
        key_hash -> Text,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        occurred_at -> Timestamp,
        event_type -> Text,
        actor_type -> Nullable<Text>,
        actor_id -> Nullable<Text>,
        user_id -> Nullable<Text>,
        session_id -> Nullable<Text>,
        client_address -> Nullable<Text>,
        request_id -> Nullable<Text>,
        details -> Text,
    }
}

diesel::table! {
    revocations (id) {
        id -> BigInt,
        session_id -> Text,
        user_id -> Text,
        revoked_at -> Timestamp,
        not_after -> Timestamp,
    }
}

diesel::table! {
    outbox (id) {
        id -> Text,
        kind -> Text,
        recipient -> Text,
        subject -> Text,
        text_body -> Text,
        html_body -> Nullable<Text>,
        message_id -> Text,
        created_at -> Timestamp,
        next_attempt_at -> Timestamp,
        attempts -> Integer,
        claimed_until -> Nullable<Timestamp>,
        sent_at -> Nullable<Timestamp>,
        gave_up_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    mail_tokens (token_hash) {
        token_hash -> Text,
        user_id -> Text,
        purpose -> Text,
        new_email -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(mail_tokens -> users (user_id));
diesel::joinable!(api_keys -> service_accounts (service_account_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(totp_secrets -> users (user_id));
diesel::joinable!(mfa_challenges -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    totp_secrets,
    mfa_challenges,
    refresh_tokens,
    service_accounts,
    api_keys,
    mail_tokens
);
