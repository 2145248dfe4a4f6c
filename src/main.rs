use std::process::ExitCode;

use authd::{
    Application,
    config::{Cli, Command, Config, KeysCommand},
    telemetry,
};
use clap::Parser;

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
        Command::Keys(KeysCommand::Rewrap) => authd::rewrap_keys(&config).await.map(|rewrapped| {
            println!(
                "encrypted {} signing keys under key-encryption key {}",
                rewrapped.count, rewrapped.kek_id
            );
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
