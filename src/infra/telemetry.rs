//! Log output, and with the `otlp` feature span export. Verbosity follows
//! `RUST_LOG` (default `info`).
//!
//! Every call runs in a `call` span (method, peer, request id); text lines
//! show its fields as `call{…}:`, JSON lines under `"span"`.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What logging set up that must outlive the program's work: with the `otlp`
/// feature, the span exporter, which sends the spans still buffered when
/// this is dropped. Keep it until `main` returns.
#[must_use = "dropping it stops span export"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    tracer_provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// Starts logging in `format`. With the `otlp` feature and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
/// set, spans are also exported over OTLP/gRPC, configured by the standard
/// `OTEL_*` variables.
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only help a person at a terminal; in files they are noise.
    let text = (format == LogFormat::Text)
        .then(|| fmt::layer().with_ansi(std::io::stdout().is_terminal()));
    let json = (format == LogFormat::Json).then(|| fmt::layer().json().flatten_event(true));
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json);

    #[cfg(feature = "otlp")]
    let (subscriber, tracer_provider, otlp_error) = {
        let (provider, error) = match otlp::tracer_provider() {
            Ok(provider) => (provider, None),
            Err(error) => (None, Some(error)),
        };
        let layer = provider.as_ref().map(|provider| {
            use opentelemetry::trace::TracerProvider as _;
            tracing_opentelemetry::layer().with_tracer(provider.tracer("authd"))
        });
        (subscriber.with(layer), provider, error)
    };

    // A subscriber may already be set (tests start several applications);
    // the first one stays.
    let _ = subscriber.try_init();

    #[cfg(feature = "otlp")]
    {
        // Tracing is only an aid: a bad exporter setting must not stop
        // authd, but it must be seen.
        if let Some(error) = otlp_error {
            tracing::warn!(%error, "OTLP span export disabled");
        }
        Telemetry { tracer_provider }
    }
    #[cfg(not(feature = "otlp"))]
    Telemetry {}
}

#[cfg(feature = "otlp")]
impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("cannot flush the spans left to export: {error}");
        }
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::Key;
    use opentelemetry_otlp::{ExporterBuildError, SpanExporter};
    use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};

    const ENDPOINT_VARIABLES: [&str; 2] = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ];

    /// A provider that batches spans to the OTLP endpoint the environment
    /// names, or `None` when it names none.
    pub(super) fn tracer_provider() -> Result<Option<SdkTracerProvider>, ExporterBuildError> {
        if !ENDPOINT_VARIABLES
            .iter()
            .any(|variable| std::env::var_os(variable).is_some())
        {
            return Ok(None);
        }
        let exporter = SpanExporter::builder().with_tonic().build()?;
        // The builder reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
        // "authd" only replaces the SDK's "unknown_service" when neither
        // names the service.
        let mut resource = Resource::builder().build();
        let unnamed = resource
            .get(&Key::from_static_str("service.name"))
            .is_none_or(|name| name.as_str().starts_with("unknown_service"));
        if unnamed {
            resource = Resource::builder().with_service_name("authd").build();
        }
        Ok(Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        ))
    }
}
