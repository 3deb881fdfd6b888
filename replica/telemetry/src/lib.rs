//! Logs and traces: human-readable logs on stderr (`RUST_LOG` filters them), and, when an OTLP
//! endpoint is given, spans exported to an OpenTelemetry collector over OTLP/HTTP (protobuf)
//! through `tracing-opentelemetry`. Used by the replica and by the operator.
//!
//! # Layout
//! One file: [`Telemetry`] (the guard that flushes spans) and the function that installs the
//! subscriber with its filter, log format and optional OTLP exporter.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes and stops the span exporter when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

/// Installs the global subscriber. `otlp_endpoint` is the collector's base URL (spans go to
/// `<endpoint>/v1/traces`); `instance` names this process in the exported resource.
pub fn init(
    service: &'static str,
    instance: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    init_filtered(service, instance, otlp_endpoint, "info")
}

/// [`init`], with the filter used when `RUST_LOG` is unset.
pub fn init_filtered(
    service: &'static str,
    instance: &str,
    otlp_endpoint: Option<&str>,
    default_filter: &str,
) -> Result<Telemetry, TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only on a terminal: a pod's log is a file.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let Some(endpoint) = otlp_endpoint else {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init();
        return Ok(Telemetry { provider: None });
    };
    let err = |reason: String| TelemetryError {
        endpoint: endpoint.to_string(),
        reason,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service)
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.instance.id",
                    instance.to_string(),
                ))
                .build(),
        )
        .build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("thicket"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry {
        provider: Some(provider),
    })
}
