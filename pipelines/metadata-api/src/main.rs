//! `metadata-api`: see the crate docs; `--help` for flags.

use anyhow::Context;
use clap::Parser;
use metadata_api::{Args, serve};
use streampulse_core::{shutdown, songs, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let (catalog, behaviour) = args
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let songs = songs::read_parquet(&catalog)
        .with_context(|| format!("reading the catalog {}", catalog.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(songs = songs.len(), catalog = %catalog.display(), ?behaviour, "serving");
    let server = serve(listener, songs, behaviour, shutdown::signal())?;
    if let Some(path) = &args.port_file {
        streampulse_core::location::write_atomic(path, server.addr.to_string().as_bytes())
            .context("writing --port-file")?;
    }
    tracing::info!(url = %server.url, "listening");
    server.task.await.context("server task")??;
    tracing::info!("stopped");
    Ok(())
}
