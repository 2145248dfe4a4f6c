use std::process::ExitCode;

use authd::{
    Application,
    config::{Cli, Command, Config, KeysCommand, ServiceAccountsCommand},
    telemetry,
};
use clap::Parser;
use secrecy::ExposeSecret;

/// glibc's allocator keeps memory freed by many threads in per-thread
/// arenas, so a burst of connections left authd's resident memory high long
/// after it ended. jemalloc's background thread returns freed pages to the
/// system within seconds, even while authd is otherwise idle.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (a C string it reads at start): freed pages go back
/// to the system after a second instead of ten, and at once rather than
/// being kept as "lazily freed", which still counts as resident.
#[unsafe(export_name = "_rjem_malloc_conf")]
static ALLOCATOR_SETTINGS: &[u8; 37] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::try_from(cli.settings) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init(config.log_format);

    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match Application::build(&config).await {
            Ok(app) => app.run_until(authd::shutdown_signal()).await,
            Err(error) => Err(error),
        },
        Command::Migrate => authd::migrate(&config).await,
        Command::Keys(KeysCommand::Rotate) => authd::rotate_keys(&config).await.map(|rotated| {
            println!(
                "stored signing key {} (generation {}); it signs from {}",
                rotated.kid,
                rotated.generation,
                rotated.activates_at.to_rfc3339()
            );
        }),
        Command::Users(command) => authd::change_role(&config, &command)
            .await
            .map(|outcome| println!("{outcome}")),
        Command::Keys(KeysCommand::Rewrap) => authd::rewrap_keys(&config).await.map(|rewrapped| {
            println!(
                "encrypted {} signing keys and {} TOTP secrets under key-encryption key {}",
                rewrapped.count, rewrapped.totp_secrets, rewrapped.kek_id
            );
        }),
        Command::ServiceAccounts(ServiceAccountsCommand::Create { name, roles }) => {
            authd::create_service_account(&config, &name, &roles)
                .await
                .map(|created| {
                    println!("created service account {}", created.id);
                    println!(
                        "API key (shown only now; keep it secret): {}",
                        created.api_key.expose_secret()
                    );
                })
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
