//! `metadata-api`: see the crate docs; `--help` for flags and exit codes.

use metadata_api::{Args, serve};
use streampulse_core::{ExitCode, shutdown, songs, telemetry};

fn main() -> std::process::ExitCode {
    let args: Args = match streampulse_core::runner::parse(std::env::args_os()) {
        Ok(args) => args,
        Err(code) => return code.into(),
    };
    telemetry::init(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::Internal.into();
        }
    };
    match runtime.block_on(serve_until_stopped(&args)) {
        Ok(()) => ExitCode::Ok.into(),
        Err((code, message)) => {
            tracing::error!(exit_code = code as u8, "{message}");
            code.into()
        }
    }
}

async fn serve_until_stopped(args: &Args) -> Result<(), (ExitCode, String)> {
    let (catalog, behaviour) = args
        .validate()
        .map_err(|e| (ExitCode::Usage, format!("invalid configuration: {e}")))?;
    let songs = songs::read_parquet(&catalog).map_err(|e| {
        (
            ExitCode::DataErr,
            format!("reading the catalog {}: {e}", catalog.display()),
        )
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            (
                ExitCode::Unavailable,
                format!("binding {}: {e}", args.listen),
            )
        })?;
    tracing::info!(songs = songs.len(), catalog = %catalog.display(), ?behaviour, "serving");
    let server = serve(listener, songs, behaviour, shutdown::signal())
        .map_err(|e| (ExitCode::Internal, format!("starting the server: {e}")))?;
    if let Some(path) = &args.port_file {
        streampulse_core::location::write_atomic(path, server.addr.to_string().as_bytes())
            .map_err(|e| (ExitCode::Internal, format!("writing --port-file: {e}")))?;
    }
    tracing::info!(url = %server.url, "listening");
    match server.task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err((ExitCode::Internal, format!("server: {e}"))),
        Err(e) => return Err((ExitCode::Internal, format!("server task: {e}"))),
    }
    tracing::info!("stopped");
    Ok(())
}
