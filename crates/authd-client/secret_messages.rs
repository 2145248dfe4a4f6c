/// The messages that carry passwords or tokens. Their generated `Debug` is
/// skipped, by authd's build and the client's alike, for one that redacts
/// them, so neither can leak into a log.
const SECRET_MESSAGES: [&str; 7] = [
    "auth.v1.SignupRequest",
    "auth.v1.LoginRequest",
    "auth.v1.LoginResponse",
    "auth.v1.RefreshRequest",
    "auth.v1.RefreshResponse",
    "auth.v1.ChangePasswordRequest",
    "auth.v1.IntrospectTokenRequest",
];
