//! A load generator for authd: sends Signup, Login or GetMe calls, or GetMe
//! calls while logins flood the service, at a chosen concurrency for a chosen
//! time, and reports calls per second, latency percentiles and the count of
//! each gRPC status code.
//!
//! Start authd with its abuse limits raised, or its per-client rate limits
//! answer most calls RESOURCE_EXHAUSTED (all load comes from one address):
//!
//! ```sh
//! cargo build --release --bin authd --example loadgen
//! target/release/authd --login-rate 1000000/min --signup-rate 1000000/min \
//!   --lockout-threshold 1000 &
//! target/release/examples/loadgen --scenario getme --concurrency 32 --duration 15s
//! target/release/examples/loadgen --scenario login --concurrency 4
//! target/release/examples/loadgen --scenario mixed-flood --concurrency 4 \
//!   --flood-concurrency 64 --flood-rate 28
//! target/release/examples/loadgen --measure-bcrypt
//! ```
//!
//! Scenarios:
//! - `signup`: every call signs up a new email, unique to the call.
//! - `login`: signs up one account, then every call logs in to it with the
//!   right password.
//! - `getme`: signs up and logs in once, then every call is GetMe with that
//!   access token. `--no-setup` skips both and sends a placeholder token, for
//!   a server without authd's checks (the `floor` example).
//! - `mixed-flood`: GetMe as in `getme` from `--concurrency` workers, and
//!   logins with the right password to a second account from
//!   `--flood-concurrency` workers; the two are reported separately.
//!
//! By default each worker sends its next call as soon as the previous one is
//! answered (closed loop). With `--rate` (or `--flood-rate`) the workers
//! share a fixed schedule of that many calls per second instead, and a call's
//! latency counts from its scheduled time, so a server that falls behind is
//! charged for the wait, as long as there are enough workers free to keep to
//! the schedule (`sent/s` in the report shows whether they did).
//!
//! Only calls answered within the measured window count; the warmup before
//! it fills queues and pools. `--json` prints the report as JSON on stdout
//! and the text report on stderr.
//!
//! `--measure-bcrypt` sends nothing: it times bcrypt hashes and verifies on
//! one thread and prints the bcrypt limit, cores divided by the seconds one
//! hash takes, which no authd on this machine can beat at that cost; then it
//! times hashes on every core at once, for comparison.
//!
//! Helpers for a load generator that counts only HTTP statuses (h2load):
//! `--print-token` signs up and logs in once and prints the access token;
//! `--probe` sends one GetMe (`--service greeter`: one Greet to the example
//! backend) with `--token`, or with no token when none is given, and fails
//! unless it is answered OK.
//!
//! `--measure-revocation` times revocation to rejection: each of `--trials`
//! trials logs in on `--target`, waits until `--observer` (another authd
//! replica, or with `--service greeter` a backend subscribed to revocations)
//! accepts the token, logs out on `--target`, then calls the observer every
//! millisecond until it answers UNAUTHENTICATED. The time counts from the
//! moment Logout was sent. It first proves that `--target` serves
//! WatchRevocations to the service account of `--api-key`, and fails clearly
//! if it does not.
//!
//! ```sh
//! target/release/examples/loadgen --measure-revocation --target http://127.0.0.1:50071 \
//!   --observer http://127.0.0.1:50072 --api-key "$API_KEY" --trials 200
//! ```

use std::{
    collections::{BTreeMap, btree_map::Entry},
    fmt,
    num::NonZero,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use authd::api::proto::{
    GetMeRequest, IssueServiceTokenRequest, LoginRequest, LogoutRequest, SignupRequest,
    WatchRevocationsRequest, auth_service_client::AuthServiceClient,
};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::{task::JoinSet, time::Instant};
use tonic::{
    Code, Request, Status,
    codegen::http::uri::PathAndQuery,
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const USERNAME: &str = "loadgen";
/// Latencies are kept in microseconds up to a minute, which is longer than
/// any call of a healthy run.
const LATENCY_MAX_US: u64 = 60_000_000;
/// The example backend's method (examples/backend/proto). Its request is
/// empty, so an empty GetMeRequest encodes it, and its answer is read as
/// `()`, which skips every field.
const GREET_PATH: &str = "/greeter.v1.GreeterService/Greet";
/// How long a revocation trial waits for the observer to accept a fresh
/// token, or to refuse a revoked one, before the measurement fails.
const TRIAL_DEADLINE: Duration = Duration::from_secs(10);

/// What answers `--probe` and the observer's calls in `--measure-revocation`.
#[derive(Clone, Copy, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
enum Service {
    /// authd: GetMe.
    Authd,
    /// The example backend (examples/backend): Greet.
    Greeter,
}

#[derive(Clone, Copy, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    Signup,
    Login,
    Getme,
    MixedFlood,
}

/// Load generator for authd's gRPC API.
#[derive(Parser)]
#[command(name = "loadgen")]
struct Args {
    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,

    #[arg(long, value_enum, default_value_t = Scenario::Getme)]
    scenario: Scenario,

    /// Workers sending calls; in mixed-flood, the GetMe workers.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,

    /// Calls per second on a fixed schedule, instead of each worker sending
    /// as soon as it is answered.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,

    /// How long to measure, e.g. 15s.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    duration: Duration,

    /// How long to send load before measuring.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// HTTP/2 connections the workers share. mixed-flood opens as many again
    /// for the flood, which stands for other clients.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,

    /// mixed-flood: workers sending logins.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    flood_concurrency: u32,

    /// mixed-flood: logins per second on a fixed schedule (e.g. 4 times the
    /// bcrypt limit), instead of each flood worker sending as soon as it is
    /// answered.
    #[arg(long, value_parser = parse_rate)]
    flood_rate: Option<f64>,

    /// getme: skip signup and login and send a placeholder token, for a
    /// server without authd's checks (the floor example).
    #[arg(long)]
    no_setup: bool,

    /// Print the report as JSON on stdout (the text report goes to stderr).
    #[arg(long)]
    json: bool,

    /// Send nothing; time bcrypt and print the bcrypt limit.
    #[arg(long)]
    measure_bcrypt: bool,

    /// --measure-bcrypt: the work factor (authd's default is 12).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
    bcrypt_cost: u32,

    /// --measure-bcrypt: how many hashes, and as many verifies, to average
    /// (and how many each core hashes in the all-cores measurement).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    bcrypt_rounds: u32,

    /// Sign up and log in once, print the access token and send nothing
    /// else.
    #[arg(long)]
    print_token: bool,

    /// Send one call to --target with --token and fail unless it is
    /// answered OK.
    #[arg(long)]
    probe: bool,

    /// --probe: the access token to send (none if unset).
    #[arg(long, env = "LOADGEN_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// --probe, --measure-revocation: what --target (for --probe) or
    /// --observer is.
    #[arg(long, value_enum, default_value_t = Service::Authd)]
    service: Service,

    /// Time revocation to rejection at --observer.
    #[arg(long)]
    measure_revocation: bool,

    /// --measure-revocation: the server that must refuse a revoked token.
    #[arg(long)]
    observer: Option<String>,

    /// --measure-revocation: a service account's API key, to prove that
    /// --target serves WatchRevocations.
    #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// --measure-revocation: how many sessions to revoke.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    trials: u32,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("expected calls per second above 0, got {text:?}")),
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("must be longer than 0s".into()),
        Err(error) => Err(error.to_string()),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.measure_bcrypt {
        let report = measure_bcrypt(args.bcrypt_cost, args.bcrypt_rounds)?;
        return emit(&report, args.json);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if args.print_token {
        let token = runtime.block_on(print_token(&args))?;
        println!("{token}");
        return Ok(());
    }
    if args.probe {
        return runtime.block_on(probe(&args));
    }
    if args.measure_revocation {
        let report = runtime.block_on(measure_revocation(&args))?;
        return emit(&report, args.json);
    }
    let report = runtime.block_on(run(&args))?;
    emit(&report, args.json)
}

fn emit(report: &(impl Serialize + fmt::Display), json: bool) -> anyhow::Result<()> {
    if json {
        eprint!("{report}");
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// One kind of call, as a worker sends it over and over.
#[derive(Clone)]
enum Call {
    Signup { run: Arc<str>, next: Arc<AtomicU64> },
    Login { email: Arc<str> },
    GetMe { authorization: MetadataValue<Ascii> },
}

impl Call {
    async fn send(&self, client: &mut AuthServiceClient<Channel>) -> Result<(), Status> {
        match self {
            Self::Signup { run, next } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                client.signup(signup_request(&email(run, n))).await?;
            }
            Self::Login { email } => {
                client.login(login_request(email)).await?;
            }
            Self::GetMe { authorization } => {
                client
                    .get_me(with_authorization(GetMeRequest {}, Some(authorization)))
                    .await?;
            }
        }
        Ok(())
    }
}

fn email(run: &str, suffix: impl fmt::Display) -> String {
    format!("loadgen-{run}-{suffix}@example.com")
}

fn signup_request(email: &str) -> SignupRequest {
    SignupRequest {
        email: email.into(),
        password: PASSWORD.into(),
        username: USERNAME.into(),
    }
}

fn login_request(email: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: PASSWORD.into(),
        device_label: String::new(),
    }
}

/// Signs up `email` for a scenario's setup.
async fn create_account(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
) -> anyhow::Result<Arc<str>> {
    client
        .signup(signup_request(email))
        .await
        .with_context(|| format!("setup: Signup of {email} failed"))?;
    Ok(email.into())
}

/// Signs up `email` and logs in once, for the `authorization` GetMe sends.
async fn create_session(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
) -> anyhow::Result<MetadataValue<Ascii>> {
    create_account(client, email).await?;
    log_in(client, email).await
}

/// A new session of `email`, as the `authorization` to send.
async fn log_in(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
) -> anyhow::Result<MetadataValue<Ascii>> {
    bearer(&access_token(client, email).await?)
}

/// The access token of a new session of `email`.
async fn access_token(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
) -> anyhow::Result<String> {
    Ok(client
        .login(login_request(email))
        .await
        .with_context(|| format!("Login of {email} failed"))?
        .into_inner()
        .access_token)
}

fn bearer(token: &str) -> anyhow::Result<MetadataValue<Ascii>> {
    format!("Bearer {token}")
        .parse()
        .context("the access token is not valid metadata")
}

fn with_authorization<T>(message: T, authorization: Option<&MetadataValue<Ascii>>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(authorization) = authorization {
        request
            .metadata_mut()
            .insert("authorization", authorization.clone());
    }
    request
}

/// One call to `channel` of the kind `service` answers: GetMe or Greet.
async fn call_service(
    service: Service,
    channel: &Channel,
    authorization: Option<&MetadataValue<Ascii>>,
) -> Result<(), Status> {
    let request = with_authorization(GetMeRequest {}, authorization);
    match service {
        Service::Authd => {
            AuthServiceClient::new(channel.clone())
                .get_me(request)
                .await?;
        }
        Service::Greeter => {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready()
                .await
                .map_err(|error| Status::unavailable(error.to_string()))?;
            grpc.unary::<_, (), _>(
                request,
                PathAndQuery::from_static(GREET_PATH),
                tonic_prost::ProstCodec::default(),
            )
            .await?;
        }
    }
    Ok(())
}

async fn print_token(args: &Args) -> anyhow::Result<String> {
    let channel = connect_one(&args.target).await?;
    let mut client = AuthServiceClient::new(channel);
    let email = email(&Uuid::now_v7().simple().to_string(), "token");
    create_account(&mut client, &email).await?;
    access_token(&mut client, &email).await
}

async fn probe(args: &Args) -> anyhow::Result<()> {
    let channel = connect_one(&args.target).await?;
    let authorization = args.token.as_deref().map(bearer).transpose()?;
    call_service(args.service, &channel, authorization.as_ref())
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "the probe of {} was answered {}: {}",
                args.target,
                code_name(status.code()),
                status.message()
            )
        })
}

#[derive(Serialize)]
struct RevocationReport {
    target: String,
    observer: String,
    service: Service,
    trials: u32,
    /// From sending Logout to the observer's first UNAUTHENTICATED.
    latency_ms: Latency,
}

impl fmt::Display for RevocationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "revocation on {} to rejection at {}: {} trials",
            self.target, self.observer, self.trials
        )?;
        writeln!(f, "  {}", self.latency_ms)
    }
}

/// Proves that `target` serves WatchRevocations, so a measurement against
/// an authd without the feed fails here with the reason rather than later
/// with a timeout.
async fn require_revocation_feed(
    client: &mut AuthServiceClient<Channel>,
    api_key: &str,
) -> anyhow::Result<()> {
    let token = client
        .issue_service_token(IssueServiceTokenRequest {
            api_key: api_key.to_owned(),
        })
        .await
        .context("IssueServiceToken with --api-key failed")?
        .into_inner()
        .access_token;
    let request = with_authorization(WatchRevocationsRequest::default(), Some(&bearer(&token)?));
    match client.watch_revocations(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::Unimplemented => bail!(
            "authd answers WatchRevocations UNIMPLEMENTED: it has no revocation feed, so \
             revocation-to-rejection cannot be measured"
        ),
        Err(status) => Err(status).context("WatchRevocations failed"),
    }
}

async fn measure_revocation(args: &Args) -> anyhow::Result<RevocationReport> {
    let observer = args
        .observer
        .as_deref()
        .context("--measure-revocation needs --observer")?;
    let api_key = args
        .api_key
        .as_deref()
        .context("--measure-revocation needs --api-key")?;
    let mut client = AuthServiceClient::new(connect_one(&args.target).await?);
    require_revocation_feed(&mut client, api_key).await?;
    let watcher = connect_one(observer).await?;
    let email = create_account(
        &mut client,
        &email(&Uuid::now_v7().simple().to_string(), "revocation"),
    )
    .await?;
    let mut histogram = new_histogram();
    for trial in 1..=args.trials {
        let authorization = log_in(&mut client, &email).await?;
        let fresh = Instant::now();
        while let Err(status) = call_service(args.service, &watcher, Some(&authorization)).await {
            ensure!(
                fresh.elapsed() < TRIAL_DEADLINE,
                "trial {trial}: {observer} still refuses a fresh token after {TRIAL_DEADLINE:?}: \
                 {}",
                code_name(status.code())
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sent = Instant::now();
        client
            .logout(with_authorization(
                LogoutRequest::default(),
                Some(&authorization),
            ))
            .await
            .with_context(|| format!("trial {trial}: Logout failed"))?;
        loop {
            match call_service(args.service, &watcher, Some(&authorization)).await {
                Err(status) if status.code() == Code::Unauthenticated => break,
                Ok(()) => ensure!(
                    sent.elapsed() < TRIAL_DEADLINE,
                    "trial {trial}: {observer} still accepts a revoked token after \
                     {TRIAL_DEADLINE:?}"
                ),
                Err(status) => bail!(
                    "trial {trial}: {observer} answered {}: {}",
                    code_name(status.code()),
                    status.message()
                ),
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        histogram.saturating_record(micros);
    }
    Ok(RevocationReport {
        target: args.target.clone(),
        observer: observer.to_owned(),
        service: args.service,
        trials: args.trials,
        latency_ms: Latency::of(&histogram),
    })
}

async fn connect(target: &str, connections: u32) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(connect_one(target).await?);
    }
    Ok(channels)
}

/// A channel over its own HTTP/2 connection to `target`.
async fn connect_one(target: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(target.to_owned())
        .with_context(|| format!("{target} is not a URL"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {target}"))
}

/// Workers sending one kind of call, reported on their own.
struct Load {
    name: &'static str,
    call: Call,
    concurrency: u32,
    rate: Option<f64>,
    channels: Vec<Channel>,
}

async fn run(args: &Args) -> anyhow::Result<RunReport> {
    if args.no_setup && !matches!(args.scenario, Scenario::Getme) {
        bail!("--no-setup applies to --scenario getme only");
    }
    let channels = connect(&args.target, args.connections).await?;
    let mut setup = AuthServiceClient::new(channels[0].clone());
    // Unique per run, so runs against the same database never collide.
    let run_id: Arc<str> = Uuid::now_v7().simple().to_string().into();
    let load = |name, call| Load {
        name,
        call,
        concurrency: args.concurrency,
        rate: args.rate,
        channels: channels.clone(),
    };
    let loads = match args.scenario {
        Scenario::Signup => vec![load(
            "signup",
            Call::Signup {
                run: run_id,
                next: Arc::default(),
            },
        )],
        Scenario::Login => {
            let email = create_account(&mut setup, &email(&run_id, "login")).await?;
            vec![load("login", Call::Login { email })]
        }
        Scenario::Getme => {
            let authorization = if args.no_setup {
                MetadataValue::from_static("Bearer no-setup")
            } else {
                create_session(&mut setup, &email(&run_id, "getme")).await?
            };
            vec![load("getme", Call::GetMe { authorization })]
        }
        Scenario::MixedFlood => {
            let authorization = create_session(&mut setup, &email(&run_id, "getme")).await?;
            let email = create_account(&mut setup, &email(&run_id, "flood")).await?;
            vec![
                load("getme", Call::GetMe { authorization }),
                Load {
                    name: "login-flood",
                    call: Call::Login { email },
                    concurrency: args.flood_concurrency,
                    rate: args.flood_rate,
                    channels: connect(&args.target, args.connections).await?,
                },
            ]
        }
    };

    let window = Window::after(args.warmup, args.duration);
    let mut workers = JoinSet::new();
    for (index, load) in loads.iter().enumerate() {
        let pacer = load
            .rate
            .map(|rate| Arc::new(Pacer::new(window.began, rate)));
        // Workers take the load's connections in turn.
        let channels = load.channels.iter().cycle();
        for channel in channels.take(load.concurrency as usize) {
            let call = load.call.clone();
            let client = AuthServiceClient::new(channel.clone());
            let pacer = pacer.clone();
            workers
                .spawn(async move { (index, send_until_end(call, client, pacer, window).await) });
        }
    }
    let mut tallies: Vec<Tally> = loads.iter().map(|_| Tally::default()).collect();
    while let Some(joined) = workers.join_next().await {
        let (index, tally) = joined.context("a worker failed")?;
        tallies[index].merge(tally)?;
    }

    let seconds = args.duration.as_secs_f64();
    Ok(RunReport {
        scenario: args.scenario,
        target: args.target.clone(),
        connections: args.connections,
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: seconds,
        loads: loads
            .iter()
            .zip(&tallies)
            .map(|(load, tally)| LoadReport::new(load, tally, seconds))
            .collect::<anyhow::Result<_>>()?,
    })
}

/// Load starts at `began`; calls answered in `start..end` are measured.
#[derive(Clone, Copy)]
struct Window {
    began: Instant,
    start: Instant,
    end: Instant,
}

impl Window {
    fn after(warmup: Duration, duration: Duration) -> Self {
        let began = Instant::now();
        let start = began + warmup;
        Self {
            began,
            start,
            end: start + duration,
        }
    }
}

/// A schedule of evenly spaced send times shared by a load's workers.
struct Pacer {
    origin: Instant,
    rate: f64,
    taken: AtomicU64,
}

impl Pacer {
    fn new(origin: Instant, rate: f64) -> Self {
        Self {
            origin,
            rate,
            taken: AtomicU64::new(0),
        }
    }

    fn next_slot(&self) -> Instant {
        let slot = self.taken.fetch_add(1, Ordering::Relaxed);
        self.origin + Duration::from_secs_f64(slot as f64 / self.rate)
    }
}

async fn send_until_end(
    call: Call,
    mut client: AuthServiceClient<Channel>,
    pacer: Option<Arc<Pacer>>,
    window: Window,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let scheduled = pacer.as_ref().map_or_else(Instant::now, |p| p.next_slot());
        if scheduled >= window.end {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        if scheduled >= window.start {
            tally.sent += 1;
        }
        // A call still unanswered at the end is dropped uncounted: it belongs
        // to no window.
        let Ok(answer) = tokio::time::timeout_at(window.end, call.send(&mut client)).await else {
            break;
        };
        let answered = Instant::now();
        if answered >= window.start {
            let code = answer.err().map_or(Code::Ok, |status| status.code());
            tally.record(code, answered - scheduled);
        }
    }
    tally
}

/// One worker's, then one load's, answers: a latency histogram per code.
#[derive(Default)]
struct Tally {
    sent: u64,
    by_code: BTreeMap<&'static str, Histogram<u64>>,
}

#[allow(
    clippy::expect_used,
    reason = "the bounds are constants that hdrhistogram accepts"
)]
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant bounds are valid")
}

impl Tally {
    fn record(&mut self, code: Code, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.by_code
            .entry(code_name(code))
            .or_insert_with(new_histogram)
            .saturating_record(micros);
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.sent += other.sent;
        for (code, histogram) in other.by_code {
            match self.by_code.entry(code) {
                Entry::Vacant(entry) => {
                    entry.insert(histogram);
                }
                Entry::Occupied(mut entry) => entry.get_mut().add(histogram)?,
            }
        }
        Ok(())
    }
}

/// The canonical names, as grpcurl and the gRPC docs print them.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[derive(Serialize)]
struct RunReport {
    scenario: Scenario,
    target: String,
    connections: u32,
    warmup_s: f64,
    duration_s: f64,
    loads: Vec<LoadReport>,
}

#[derive(Serialize)]
struct LoadReport {
    name: &'static str,
    concurrency: u32,
    /// The fixed schedule's calls per second; none for closed loop.
    rate: Option<f64>,
    /// Calls sent within the window, per second.
    offered_rps: f64,
    completed: u64,
    /// Calls answered within the window, per second, whatever their code.
    rps: f64,
    ok_rps: f64,
    latency_ms: Latency,
    status: BTreeMap<&'static str, StatusReport>,
}

#[derive(Serialize)]
struct StatusReport {
    count: u64,
    latency_ms: Latency,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

impl LoadReport {
    fn new(load: &Load, tally: &Tally, seconds: f64) -> anyhow::Result<Self> {
        let mut all = new_histogram();
        for histogram in tally.by_code.values() {
            all.add(histogram)?;
        }
        let ok = tally.by_code.get("OK").map_or(0, Histogram::len);
        Ok(Self {
            name: load.name,
            concurrency: load.concurrency,
            rate: load.rate,
            offered_rps: tally.sent as f64 / seconds,
            completed: all.len(),
            rps: all.len() as f64 / seconds,
            ok_rps: ok as f64 / seconds,
            latency_ms: Latency::of(&all),
            status: tally
                .by_code
                .iter()
                .map(|(&code, histogram)| {
                    let report = StatusReport {
                        count: histogram.len(),
                        latency_ms: Latency::of(histogram),
                    };
                    (code, report)
                })
                .collect(),
        })
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scenario = self
            .scenario
            .to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default();
        writeln!(
            f,
            "{scenario} against {}: {} connection(s), {:.1} s warmup, {:.1} s measured",
            self.target, self.connections, self.warmup_s, self.duration_s
        )?;
        for load in &self.loads {
            let pacing = load.rate.map_or_else(
                || "closed loop".to_owned(),
                |rate| format!("{rate}/s scheduled"),
            );
            writeln!(f, "{}: {} workers, {pacing}", load.name, load.concurrency)?;
            writeln!(
                f,
                "  answered {:>9.1}/s ({} calls), OK {:.1}/s, sent {:.1}/s",
                load.rps, load.completed, load.ok_rps, load.offered_rps
            )?;
            writeln!(f, "  latency  {}", load.latency_ms)?;
            for (code, status) in &load.status {
                writeln!(f, "  {code:<20} {:>9}  {}", status.count, status.latency_ms)?;
            }
            if load.status.contains_key("RESOURCE_EXHAUSTED") {
                writeln!(
                    f,
                    "  (RESOURCE_EXHAUSTED: authd's hashing queue was full, or its rate limits \
                     or lockout refused the call)"
                )?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            self.p50, self.p90, self.p99, self.max
        )
    }
}

#[derive(Serialize)]
struct BcryptReport {
    cost: u32,
    rounds: u32,
    cores: usize,
    hash_s: f64,
    verify_s: f64,
    /// Signups per second that `cores` threads hashing nonstop would finish.
    signup_limit_rps: f64,
    /// Logins per second that `cores` threads verifying nonstop would finish.
    login_limit_rps: f64,
    /// Hashes per second that `cores` threads did finish together. Below
    /// `signup_limit_rps` when the cores share execution units (SMT) or
    /// clock down under load, which the limits above do not see.
    parallel_hash_rps: f64,
}

fn measure_bcrypt(cost: u32, rounds: u32) -> anyhow::Result<BcryptReport> {
    let started = std::time::Instant::now();
    let mut hash = String::new();
    for _ in 0..rounds {
        hash = bcrypt::hash(PASSWORD, cost)?;
    }
    let hash_s = started.elapsed().as_secs_f64() / f64::from(rounds);
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        ensure!(bcrypt::verify(PASSWORD, &hash)?, "bcrypt verify failed");
    }
    let verify_s = started.elapsed().as_secs_f64() / f64::from(rounds);
    // authd runs one hash per core at once, counted the same way.
    let cores = std::thread::available_parallelism().map_or(1, NonZero::get);
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..cores)
            .map(|_| {
                scope.spawn(|| (0..rounds).try_for_each(|_| bcrypt::hash(PASSWORD, cost).map(drop)))
            })
            .collect();
        threads
            .into_iter()
            .try_for_each(|thread| match thread.join() {
                Ok(hashed) => hashed.map_err(anyhow::Error::from),
                Err(_) => bail!("a hashing thread panicked"),
            })
    })?;
    let parallel_hash_rps = (cores as f64 * f64::from(rounds)) / started.elapsed().as_secs_f64();
    Ok(BcryptReport {
        cost,
        rounds,
        cores,
        hash_s,
        verify_s,
        signup_limit_rps: cores as f64 / hash_s,
        login_limit_rps: cores as f64 / verify_s,
        parallel_hash_rps,
    })
}

impl fmt::Display for BcryptReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bcrypt cost {} on one thread, mean of {}: hash {:.4} s, verify {:.4} s",
            self.cost, self.rounds, self.hash_s, self.verify_s
        )?;
        writeln!(
            f,
            "bcrypt limit on {} cores: Signup {:.2}/s, Login {:.2}/s \
             ({:.2} hashes/s measured on all cores at once)",
            self.cores, self.signup_limit_rps, self.login_limit_rps, self.parallel_hash_rps
        )
    }
}
