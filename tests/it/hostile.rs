//! Attacks by one unauthenticated client against a live authd process:
//! made-up method names, HTTP/2 header floods, idle connections, and
//! running the process out of file descriptors. Each is bounded in size and
//! time, on 127.0.0.1 only; authd's memory must stay bounded, fall back
//! after the attacker leaves, and real calls must keep succeeding.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

use crate::support::{Backend, PASSWORD, Process, TestApp, TestDb, sample, scrape};

const MIB: u64 = 1024 * 1024;
/// The most resident memory authd may use under attack.
const RSS_LIMIT: u64 = 256 * MIB;

/// Resident memory of a process, from /proc.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// CPU time a process has used (user and system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The command name may hold spaces; the fields after it do not.
    let after_name = stat.rsplit_once(')').expect("stat").1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Samples a process's resident memory until stopped; the peak.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self { peak, stop, task }
    }

    async fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("watcher");
        self.peak.load(Ordering::Relaxed)
    }
}

/// Signup, Login and GetMe for a new user: what a real client does.
async fn real_client_round(app: &TestApp, n: u64) {
    let email = format!("real{n}@example.com");
    let user = app.signup(&email, PASSWORD, "real").await.expect("signup");
    let login = app.login(&email, PASSWORD).await.expect("login");
    let me = app.get_me(&login.access_token).await.expect("get_me");
    assert_eq!(me.id, user.id);
}

/// Real clients, one round after another, until `stop`; how many rounds
/// succeeded. Any failure fails the test.
fn real_clients(app: TestApp, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            real_client_round(&app, rounds).await;
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rounds
    })
}

/// Waits up to `within` for authd's memory to fall to `limit`; the last
/// reading.
async fn settles(pid: u32, limit: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let now = rss(pid);
        if now <= limit || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

mod h2 {
    //! Just enough HTTP/2 to send what no well-behaved client would.

    pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const HEADERS: u8 = 0x1;
    const SETTINGS: u8 = 0x4;
    const CONTINUATION: u8 = 0x9;
    const END_HEADERS: u8 = 0x4;
    /// The default SETTINGS_MAX_FRAME_SIZE.
    const MAX_FRAME: usize = 16_384;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len())
            .expect("frame length")
            .to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// The connection preface and an empty SETTINGS frame.
    pub(super) fn start() -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes
    }

    fn string(block: &mut Vec<u8>, text: &str) {
        let length = u8::try_from(text.len()).expect("short string");
        assert!(length < 127);
        block.push(length);
        block.extend_from_slice(text.as_bytes());
    }

    /// A Login call's headers, with no body to follow, and `repeats`
    /// copies of a tiny header that each cost one byte on the wire (an
    /// index into HPACK's dynamic table) and 34 bytes decoded.
    pub(super) fn headers(stream: u32, repeats: usize) -> Vec<u8> {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        block.push(0x04); // :path, literal
        string(&mut block, "/auth.v1.AuthService/Login");
        block.push(0x01); // :authority, literal
        string(&mut block, "localhost");
        block.extend([0x0f, 0x10]); // content-type, literal
        string(&mut block, "application/grpc");
        block.push(0x40); // a new header, added to the dynamic table (62)
        string(&mut block, "x");
        string(&mut block, "y");
        block.extend(std::iter::repeat_n(0xbe, repeats)); // index 62
        let mut chunks = block.chunks(MAX_FRAME).peekable();
        let mut bytes = Vec::new();
        let mut kind = HEADERS;
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() {
                END_HEADERS
            } else {
                0
            };
            bytes.extend(frame(kind, flags, stream, chunk));
            kind = CONTINUATION;
        }
        bytes
    }
}

/// Header blocks that decode to 2 MiB (far over the limit) from 60 KB on
/// the wire, as in the report: `budget` bytes per attacker, reconnecting
/// whenever authd closes the connection.
async fn flood_oversized_headers(addr: std::net::SocketAddr, budget: usize) {
    let block_repeats = 2 * 1024 * 1024 / 34;
    let mut sent = 0;
    while sent < budget {
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            continue;
        };
        if tcp.write_all(&h2::start()).await.is_err() {
            continue;
        }
        let mut stream = 1;
        loop {
            let headers = h2::headers(stream, block_repeats);
            if sent >= budget || tcp.write_all(&headers).await.is_err() {
                break;
            }
            sent += headers.len();
            stream += 2;
        }
    }
}

/// Streams whose headers fit the limit but whose request message never
/// comes, as many as the connection allows; held until `stop`.
async fn stall_streams(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&h2::start()).await.expect("preface");
    // About 15 KB decoded: just under the 16 KiB limit.
    for stream in (1..=2 * 64).step_by(2) {
        if tcp.write_all(&h2::headers(stream, 440)).await.is_err() {
            return;
        }
    }
    let mut sink = vec![0; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let read = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut sink)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return;
        }
    }
}

/// 1,000 calls to made-up methods with long names (each would have been a
/// metrics series of its own).
async fn call_made_up_methods(app: &TestApp) {
    let channel = app.channel().await;
    for n in 0..1000 {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let path = format!("/auth.v1.AuthService/{n}{}", "M".repeat(2000));
        let _ = grpc
            .unary::<_, (), _>(
                tonic::Request::new(()),
                path.parse().expect("path"),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await;
    }
}

/// Connections that send nothing, or only the HTTP/2 preface, held open.
async fn idle_connections(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for n in 0..count {
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            continue;
        };
        if n % 2 == 1 {
            let _ = tcp.write_all(h2::PREFACE).await;
        }
        held.push(tcp);
    }
    held
}

/// The three attacks of the report at once, at ten times its connection
/// counts (20 header-flooding connections instead of 2, and 20 more that
/// stall the most calls a connection may carry), with 3,000 idle
/// connections: authd stays under 256 MiB, serves real clients throughout,
/// and returns near its starting memory within seconds of the attacker
/// leaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_leave_memory_bounded_and_real_clients_served() {
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let authd = Process::start(
        &db,
        &["--signup-rate", "100000/min", "--login-rate", "100000/min"],
    );
    let (pid, addr) = (authd.pid(), authd.addr);
    let app = authd.app(&db);
    for n in 0..20 {
        real_client_round(&app, 1_000_000 + n).await;
    }
    let baseline = rss(pid);
    let watch = RssWatch::start(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let real = real_clients(authd.app(&db), Arc::clone(&stop));

    let mut attackers = JoinSet::new();
    for _ in 0..20 {
        attackers.spawn(flood_oversized_headers(addr, 15_600_000));
    }
    let mut stalls = JoinSet::new();
    for _ in 0..20 {
        stalls.spawn(stall_streams(addr, Arc::clone(&stop)));
    }
    let idle = idle_connections(addr, 3000).await;
    call_made_up_methods(&app).await;
    while let Some(done) = attackers.join_next().await {
        done.expect("attacker");
    }

    stop.store(true, Ordering::Relaxed);
    let rounds = real.await.expect("real clients kept succeeding");
    while stalls.join_next().await.is_some() {}
    drop(idle);
    let peak = watch.peak().await;
    assert!(
        rounds > 0,
        "no real client round completed during the attack"
    );
    assert!(peak < RSS_LIMIT, "peak RSS {} MiB under attack", peak / MIB);
    let settled = settles(pid, baseline + 16 * MIB, Duration::from_secs(10)).await;
    assert!(
        settled <= baseline + 16 * MIB,
        "RSS {} MiB ten seconds after the attack, {} MiB before",
        settled / MIB,
        baseline / MIB
    );
    eprintln!(
        "baseline {} MiB, peak {} MiB, after {} MiB, {rounds} real rounds",
        baseline / MIB,
        peak / MIB,
        settled / MIB
    );
    real_client_round(&app, 2_000_000).await;
    authd.terminate();
}

/// Reads until the peer closes the connection; false if it is still open
/// at `deadline`.
async fn closed_by_peer(tcp: &mut TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut sink = [0; 1024];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut sink)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Silent connections are closed after the idle timeout, and at the
/// connection cap a newcomer closes the longest idle one instead of being
/// locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_cannot_lock_clients_out() {
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let authd = Process::start(
        &db,
        &[
            "--max-connections",
            "100",
            "--idle-timeout",
            "2s",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let app = authd.app(&db);
    let started = tokio::time::Instant::now();
    let mut idle = idle_connections(authd.addr, 1000).await;
    // Ten times the cap were opened; real clients still get in.
    for n in 0..5 {
        real_client_round(&app, n).await;
    }
    let deadline = started + Duration::from_secs(8);
    for (n, tcp) in idle.iter_mut().enumerate() {
        assert!(
            closed_by_peer(tcp, deadline).await,
            "idle connection {n} still open after 8 s"
        );
    }
    let metrics = scrape(authd.metrics_addr.expect("metrics")).await;
    for reason in ["idle", "evicted"] {
        let dropped = sample(
            &metrics,
            &format!(r#"authd_connections_dropped_total{{reason="{reason}"}}"#),
        )
        .unwrap_or_default();
        assert!(
            dropped > 0.0,
            "no connection dropped as {reason}: {metrics}"
        );
    }
    authd.terminate();
}

/// With its file descriptors used up, authd pauses between failed accepts
/// instead of spinning on them, counts them, and serves again once
/// descriptors are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_spin() {
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let mut shell = std::process::Command::new("sh");
    shell.args([
        "-c",
        "ulimit -n 96 && exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_authd"),
    ]);
    let authd = Process::spawn(
        shell,
        &db,
        &[
            "--db-pool-size",
            "2",
            "--idle-timeout",
            "60s",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let app = authd.app(&db);
    real_client_round(&app, 0).await;
    let idle = idle_connections(authd.addr, 300).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(authd.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(authd.pid()) - before;
    // A spinning accept loop burns a whole core: 200 ticks in 2 s.
    assert!(
        used < 40,
        "authd used {used} ticks in 2 s while out of descriptors"
    );
    drop(idle);
    tokio::time::sleep(Duration::from_secs(2)).await;
    real_client_round(&app, 1).await;
    let metrics = scrape(authd.metrics_addr.expect("metrics")).await;
    assert!(
        sample(&metrics, "authd_accept_errors_total").unwrap_or_default() > 0.0,
        "{metrics}"
    );
    authd.terminate();
}
