//! Wiring Ctrl-C and SIGTERM (how ECS and Docker stop a task) to a cancellation token.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
}

/// A signal this soon after the first is the same request delivered twice, not an operator
/// asking again: `timeout(1)` and `kill -- -PGID` signal the process and then its group.
pub const SAME_REQUEST_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Cancels `token` on the first Ctrl-C or SIGTERM, and `hurry` on the second (one arriving
/// more than [`SAME_REQUEST_WITHIN`] after the first): an operator who presses Ctrl-C again
/// does not want to wait for a clean drain.
pub fn cancel_on_signals_then_hurry(token: CancellationToken, hurry: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        let first = std::time::Instant::now();
        tracing::info!("shutdown requested");
        token.cancel();
        loop {
            wait_for_signal().await;
            if first.elapsed() >= SAME_REQUEST_WITHIN {
                break;
            }
            tracing::debug!("shutdown requested again at once: the same request");
        }
        tracing::warn!("second shutdown request: stopping without waiting for the consumers");
        hurry.cancel();
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
