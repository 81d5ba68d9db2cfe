//! Cancellation on SIGTERM / ctrl-c: the run's future is dropped, staged outputs are discarded by
//! their owners, and the process exits 75 (worth a retry). Nothing partial is ever published,
//! because publishing is the last step of a run.

/// Resolves when the process is asked to stop (SIGTERM from Kubernetes/Airflow, or ctrl-c).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
