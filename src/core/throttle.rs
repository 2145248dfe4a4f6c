//! Abuse resistance: per-client rate limits on Login, Signup, Refresh and
//! IntrospectToken, and per-account login throttling.
//!
//! Counters live in this process, or in Redis when several replicas must
//! share them. Every counter update is one atomic step (a mutex here, a Lua
//! script in Redis), so parallel requests cannot slip past a limit.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use redis::{Script, aio::ConnectionManager};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{domain::Email, domain::Error, infra::metrics::Metrics};

/// `count` events per `per`, e.g. `60/min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) count: u32,
    pub(crate) per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("expected a rate such as 60/min, 10/s or 1000/h, got {text:?}");
        let (count, per) = text.split_once('/').ok_or_else(invalid)?;
        let count: u32 = count.trim().parse().map_err(|_| invalid())?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| invalid())?,
        };
        if count == 0 || per.is_zero() {
            return Err(invalid());
        }
        Ok(Self { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

/// When an account stops accepting login attempts: after `threshold`
/// consecutive failures, the next attempt must wait `base`, doubling with
/// every further failure up to `max`. Never a permanent lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lockout {
    pub(crate) threshold: u32,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl Lockout {
    /// How long after the last failure an account with `failures` must wait.
    fn delay(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.threshold)?;
        let factor = 2u32.checked_pow(over).unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(factor).min(self.max))
    }

    /// Failure counts are forgotten after this long without an attempt.
    fn memory(&self) -> Duration {
        self.max * 2
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LimitSettings {
    pub(crate) login: Rate,
    pub(crate) signup: Rate,
    pub(crate) mail: Rate,
    pub(crate) refresh: Rate,
    pub(crate) introspect: Rate,
    pub(crate) lockout: Lockout,
    /// A header set by a proxy in front of authd that names the client; only
    /// honoured when configured, since clients can send any header.
    pub(crate) forwarded_header: Option<http::HeaderName>,
    /// IPv6 clients are counted by this many leading bits of their address
    /// (32 to 128), since one host is usually given a whole /64.
    pub(crate) ipv6_prefix_length: u8,
    pub(crate) redis_url: Option<SecretString>,
    pub(crate) redis_prefix: String,
}

/// The rate-limited actions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    Login,
    Signup,
    /// The calls that send a mail or spend a mailed token.
    Mail,
    Refresh,
    Introspect,
}

#[derive(Clone)]
pub(crate) struct Limits {
    counters: Counters,
    settings: Arc<LimitSettings>,
    metrics: Metrics,
}

#[derive(Clone)]
enum Counters {
    Memory(Arc<Mutex<Memory>>),
    Redis(ConnectionManager),
}

impl Limits {
    /// Connects to Redis when configured; fails if it cannot be reached, so
    /// a replica never starts with limits that silently differ. Refusals
    /// are counted in `metrics`.
    pub(crate) async fn new(settings: LimitSettings, metrics: &Metrics) -> Result<Self, Error> {
        let counters = match &settings.redis_url {
            None => Counters::Memory(Arc::default()),
            Some(url) => {
                let client = redis::Client::open(url.expose_secret())
                    .map_err(|_| Error::internal("AUTHD_REDIS_URL is not a valid Redis URL"))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(2);
                let manager = client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(Error::unavailable)?;
                Counters::Redis(manager)
            }
        };
        Ok(Self {
            counters,
            settings: Arc::new(settings),
            metrics: metrics.clone(),
        })
    }

    /// Counts one `action` for the client that sent `headers` from `peer`.
    pub(crate) async fn check_client(
        &self,
        action: Action,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<(), Error> {
        let (name, rate) = match action {
            Action::Login => ("login", self.settings.login),
            Action::Signup => ("signup", self.settings.signup),
            Action::Mail => ("mail", self.settings.mail),
            Action::Refresh => ("refresh", self.settings.refresh),
            Action::Introspect => ("introspect", self.settings.introspect),
        };
        let client = self.client_key(headers, peer);
        let key = format!("{}rate:{name}:{client}", self.settings.redis_prefix);
        match self.counters.hit(&key, rate).await {
            Ok(None) => Ok(()),
            Ok(Some(retry_after)) => {
                match action {
                    Action::Login => self.metrics.login_throttled_by_client(),
                    Action::Signup => self.metrics.signup_throttled(),
                    Action::Mail => self.metrics.mail_throttled(),
                    Action::Refresh => self.metrics.refresh_throttled(),
                    Action::Introspect => self.metrics.introspect_throttled(),
                }
                Err(Error::RateLimited { retry_after })
            }
            Err(error) => {
                fail_open(&error);
                Ok(())
            }
        }
    }

    /// Reserves one login attempt for `email`, counting it as a failure
    /// until [`Limits::login_succeeded`] clears the count. Reserving before
    /// the password check is what stops parallel guesses from all passing.
    pub(crate) async fn begin_login(&self, email: &Email) -> Result<(), Error> {
        let key = self.account_key(email);
        match self.counters.attempt(&key, self.settings.lockout).await {
            Ok(None) => Ok(()),
            Ok(Some(retry_after)) => {
                self.metrics.account_throttled();
                Err(Error::AccountLocked { retry_after })
            }
            Err(error) => {
                fail_open(&error);
                Ok(())
            }
        }
    }

    /// Reserves one ChangePassword attempt for a session, counted apart
    /// from Login and with the same backoff: wrong current passwords sent
    /// with a stolen token never lock the owner out of Login, nor out of
    /// changing the password from a session of their own. False when the
    /// session must stop guessing.
    pub(crate) async fn begin_password_change(&self, session_id: Uuid) -> bool {
        let key = self.change_key(session_id);
        match self.counters.attempt(&key, self.settings.lockout).await {
            Ok(retry_after) => retry_after.is_none(),
            Err(error) => {
                fail_open(&error);
                true
            }
        }
    }

    /// Whether the session's wrong current passwords have reached the
    /// lockout threshold: checked after a wrong one, so that the guess that
    /// reaches it ends the session whenever it comes.
    pub(crate) async fn password_change_exhausted(&self, session_id: Uuid) -> bool {
        match self.counters.failures(&self.change_key(session_id)).await {
            Ok(failures) => failures >= self.settings.lockout.threshold,
            Err(error) => {
                fail_open(&error);
                false
            }
        }
    }

    pub(crate) async fn password_change_succeeded(&self, session_id: Uuid) {
        if let Err(error) = self.counters.clear(&self.change_key(session_id)).await {
            tracing::warn!(%error, "rate limit store unavailable; failure count not cleared");
        }
    }

    /// A checked password was wrong, or the email unknown: the attempt
    /// stays counted, and the metrics see the failure.
    pub(crate) fn login_failed(&self) {
        self.metrics.login_failed();
    }

    /// Refresh refused a token that is unknown, expired or of a revoked
    /// session; a flood of these is someone guessing or replaying.
    pub(crate) fn refresh_token_invalid(&self) {
        self.metrics.refresh_invalid();
    }

    /// Refresh was handed a token spent earlier, and revoked its session.
    pub(crate) fn refresh_token_reused(&self) {
        self.metrics.refresh_reused();
    }

    pub(crate) async fn login_succeeded(&self, email: &Email) {
        if let Err(error) = self.counters.clear(&self.account_key(email)).await {
            tracing::warn!(%error, "rate limit store unavailable; failure count not cleared");
        }
    }

    /// Emails are hashed so the counter store never holds personal data.
    fn account_key(&self, email: &Email) -> String {
        let digest = URL_SAFE_NO_PAD.encode(Sha256::digest(email.key().as_bytes()));
        format!("{}login-failures:{digest}", self.settings.redis_prefix)
    }

    fn change_key(&self, session_id: Uuid) -> String {
        format!("{}change-failures:{session_id}", self.settings.redis_prefix)
    }

    /// The client's address: the rightmost entry of the trusted forwarded
    /// header (the one the proxy itself added), else the TCP peer; for IPv6,
    /// its prefix.
    fn client_key(&self, headers: &http::HeaderMap, peer: Option<IpAddr>) -> String {
        // Only the rightmost entry is the proxy's own; anything left of it
        // came from the client. If it does not parse, the peer is used.
        let forwarded = self.settings.forwarded_header.as_ref().and_then(|name| {
            let value = headers.get_all(name).into_iter().next_back()?;
            let rightmost = value.to_str().ok()?.rsplit(',').next()?;
            rightmost.trim().parse::<IpAddr>().ok()
        });
        forwarded.or(peer).map_or_else(
            || "unknown".to_owned(),
            |ip| client_network(ip, self.settings.ipv6_prefix_length),
        )
    }
}

/// What one client is counted as: an IPv4 address (also when written as
/// IPv4-mapped IPv6), or the IPv6 network of `prefix_length` bits holding
/// the address, since anyone with one IPv6 address usually holds its whole
/// /64 and could otherwise pick a fresh address for every call.
fn client_network(ip: IpAddr, prefix_length: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let host_bits = 128u32.saturating_sub(u32::from(prefix_length));
            let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
            let network = Ipv6Addr::from_bits(v6.to_bits() & mask);
            format!("{network}/{prefix_length}")
        }
    }
}

/// A broken counter store must not take logins down with it: the caller
/// lets the request through unthrottled, and the failure is logged here.
fn fail_open(error: &redis::RedisError) {
    tracing::warn!(%error, "rate limit store unavailable; request not limited");
}

/// A fixed window: the first hit starts it, the limit is counted within it.
/// Scripts are built once: building one hashes its source.
static HIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HIT_SOURCE));
const HIT_SOURCE: &str = r"
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if count == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if count > tonumber(ARGV[2]) then return ttl end
return 0
";

/// Reserve an attempt unless the account must still wait. Uses Redis's
/// clock, so replicas with skewed clocks agree.
static ATTEMPT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ATTEMPT_SOURCE));
const ATTEMPT_SOURCE: &str = r"
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
local threshold = tonumber(ARGV[1])
if failures >= threshold then
  local delay = math.min(tonumber(ARGV[2]) * 2 ^ (failures - threshold), tonumber(ARGV[3]))
  if now < last + delay then return last + delay - now end
end
redis.call('HSET', KEYS[1], 'failures', failures + 1, 'last', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 0
";

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Counters {
    /// `Some(retry_after)` when the rate is exceeded.
    async fn hit(&self, key: &str, rate: Rate) -> redis::RedisResult<Option<Duration>> {
        match self {
            Self::Memory(memory) => Ok(lock(memory).hit(key, rate, Instant::now())),
            Self::Redis(connection) => {
                let retry_ms: u64 = HIT_SCRIPT
                    .key(key)
                    .arg(millis(rate.per))
                    .arg(rate.count)
                    .invoke_async(&mut connection.clone())
                    .await?;
                Ok((retry_ms > 0).then(|| Duration::from_millis(retry_ms)))
            }
        }
    }

    /// `Some(retry_after)` when the account must still wait.
    async fn attempt(&self, key: &str, lockout: Lockout) -> redis::RedisResult<Option<Duration>> {
        match self {
            Self::Memory(memory) => Ok(lock(memory).attempt(key, lockout, Instant::now())),
            Self::Redis(connection) => {
                let retry_ms: u64 = ATTEMPT_SCRIPT
                    .key(key)
                    .arg(lockout.threshold)
                    .arg(millis(lockout.base))
                    .arg(millis(lockout.max))
                    .arg(millis(lockout.memory()))
                    .invoke_async(&mut connection.clone())
                    .await?;
                Ok((retry_ms > 0).then(|| Duration::from_millis(retry_ms)))
            }
        }
    }

    /// The failures counted under `key`.
    async fn failures(&self, key: &str) -> redis::RedisResult<u32> {
        match self {
            Self::Memory(memory) => Ok(lock(memory)
                .accounts
                .get(key)
                .map_or(0, |failures| failures.count)),
            Self::Redis(connection) => {
                let failures: Option<u32> = redis::cmd("HGET")
                    .arg(key)
                    .arg("failures")
                    .query_async(&mut connection.clone())
                    .await?;
                Ok(failures.unwrap_or(0))
            }
        }
    }

    async fn clear(&self, key: &str) -> redis::RedisResult<()> {
        match self {
            Self::Memory(memory) => {
                lock(memory).accounts.remove(key);
                Ok(())
            }
            Self::Redis(connection) => {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut connection.clone())
                    .await
            }
        }
    }
}

fn lock(memory: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
    memory.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters of a single replica. Entries expire, and expired ones are swept
/// as the maps grow, so memory stays bounded by recent traffic.
#[derive(Default)]
struct Memory {
    windows: HashMap<String, (u32, Instant)>,
    accounts: HashMap<String, Failures>,
}

struct Failures {
    count: u32,
    last: Instant,
}

/// Sweep expired entries once a map holds this many.
const SWEEP_AT: usize = 10_000;

impl Memory {
    fn hit(&mut self, key: &str, rate: Rate, now: Instant) -> Option<Duration> {
        if self.windows.len() >= SWEEP_AT {
            self.windows.retain(|_, (_, ends)| *ends > now);
        }
        let (count, ends) = self
            .windows
            .entry(key.to_owned())
            .and_modify(|(count, ends)| {
                if *ends <= now {
                    *count = 0;
                    *ends = now + rate.per;
                }
            })
            .or_insert((0, now + rate.per));
        *count += 1;
        (*count > rate.count).then(|| *ends - now)
    }

    fn attempt(&mut self, key: &str, lockout: Lockout, now: Instant) -> Option<Duration> {
        if self.accounts.len() >= SWEEP_AT {
            self.accounts
                .retain(|_, failures| now.duration_since(failures.last) < lockout.memory());
        }
        let failures = self.accounts.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(failures.last) >= lockout.memory() {
            failures.count = 0;
        }
        if let Some(delay) = lockout.delay(failures.count) {
            let until = failures.last + delay;
            if now < until {
                return Some(until - now);
            }
        }
        failures.count += 1;
        failures.last = now;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKOUT: Lockout = Lockout {
        threshold: 5,
        base: Duration::from_secs(30),
        max: Duration::from_secs(900),
    };

    #[test]
    fn rates_parse_in_the_usual_spellings() {
        assert_eq!(
            "60/min".parse(),
            Ok(Rate {
                count: 60,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(
            "10/s".parse(),
            Ok(Rate {
                count: 10,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            "5/10m".parse(),
            Ok(Rate {
                count: 5,
                per: Duration::from_secs(600)
            })
        );
        for bad in ["0/min", "60", "x/min", "60/never"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_lockout_delay_doubles_and_is_capped() {
        let delays: Vec<_> = (4..12)
            .map(|n| LOCKOUT.delay(n).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            delays,
            [
                None,
                Some(30),
                Some(60),
                Some(120),
                Some(240),
                Some(480),
                Some(900),
                Some(900)
            ]
        );
        assert_eq!(LOCKOUT.delay(u32::MAX), Some(LOCKOUT.max));
    }

    #[test]
    fn memory_counts_attempts_before_they_are_checked() {
        let mut memory = Memory::default();
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(memory.attempt("a", LOCKOUT, start), None);
        }
        assert_eq!(
            memory.attempt("a", LOCKOUT, start),
            Some(Duration::from_secs(30))
        );
        let later = start + Duration::from_secs(30);
        assert_eq!(
            memory.attempt("a", LOCKOUT, later),
            None,
            "the wait is over"
        );
        assert_eq!(
            memory.attempt("a", LOCKOUT, later),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            memory.attempt("b", LOCKOUT, later),
            None,
            "accounts are separate"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_prefix() {
        let key = |ip: &str, length| client_network(ip.parse().expect("an address"), length);
        assert_eq!(key("2001:db8:1:2:a:b:c:d", 64), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:a:b:c:d", 64),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff", 64)
        );
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        assert_eq!(key("2001:db8:1:2::1", 48), key("2001:db8:1:3::1", 48));
        assert_eq!(key("2001:db8:abcd::1", 32), "2001:db8::/32");
        assert_eq!(key("2001:db8::7", 128), "2001:db8::7/128");
        assert_ne!(key("2001:db8::7", 128), key("2001:db8::8", 128));
    }

    #[test]
    fn ipv4_clients_are_counted_by_address_however_written() {
        let key = |ip: &str| client_network(ip.parse().expect("an address"), 64);
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_ne!(key("203.0.113.7"), key("203.0.113.8"));
    }

    #[test]
    fn memory_windows_reset() {
        let mut memory = Memory::default();
        let rate = Rate {
            count: 2,
            per: Duration::from_secs(60),
        };
        let start = Instant::now();
        assert_eq!(memory.hit("k", rate, start), None);
        assert_eq!(memory.hit("k", rate, start), None);
        assert_eq!(memory.hit("k", rate, start), Some(Duration::from_secs(60)));
        assert_eq!(memory.hit("k", rate, start + Duration::from_secs(60)), None);
    }
}
