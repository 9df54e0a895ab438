//! Closing a Kafka client off the caller's thread.

/// Destroys a Kafka client on a thread of its own, for a caller that needs nothing more of
/// it. librdkafka's destroy waits about 100 ms for its threads to time out their system
/// calls; a producer waited for two of them before its first order (BENCHMARKS.md).
pub fn close_in_background<T: Send + 'static>(client: T) {
    // Should the thread not start, the closure and the client in it are dropped here.
    if let Err(e) = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || drop(client))
    {
        tracing::debug!(error = %e, "closed a Kafka client in place");
    }
}
