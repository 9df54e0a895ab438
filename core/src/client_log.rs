//! What librdkafka reports about a client, logged once per kind of event per interval: a
//! cluster outage makes every client report every reconnect attempt, which would bury the
//! one line an operator needs under thousands.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the same kind of event stays quiet after it was logged.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(30);

/// The log of one Kafka client.
#[derive(Debug)]
pub struct ClientLog {
    client: String,
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

impl ClientLog {
    pub fn new(client: &str) -> Self {
        ClientLog {
            client: client.to_owned(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> &str {
        &self.client
    }

    /// Whether an event of `kind` is logged now: `Some(n)` with the events of that kind
    /// left unlogged since the last one, `None` when this one stays quiet.
    pub fn admit(&self, kind: &str) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match seen.get_mut(kind) {
            Some(s) if now.duration_since(s.logged_at) < REPEAT_INTERVAL => {
                s.suppressed += 1;
                None
            }
            Some(s) => {
                let n = s.suppressed;
                *s = Seen {
                    logged_at: now,
                    suppressed: 0,
                };
                Some(n)
            }
            None => {
                seen.insert(
                    kind.to_owned(),
                    Seen {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// The kind of a librdkafka log line: its facility and text with numbers (ports, times,
/// counts) left out, so reconnect attempts to one broker count as one kind.
fn kind_of(fac: &str, message: &str) -> String {
    let text: String = message.chars().filter(|c| !c.is_ascii_digit()).collect();
    format!("{fac}:{text}")
}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let Some(repeated) = self.admit(&kind_of(fac, message)) else {
            return;
        };
        let client = self.client.as_str();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", client, repeated, "{fac}: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", client, repeated, "{fac}: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client, repeated, "{fac}: {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client, repeated, "{fac}: {message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let Some(repeated) = self.admit(&format!("error:{code:?}")) else {
            return;
        };
        let client = self.client.as_str();
        match code {
            Some(
                RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed,
            ) => tracing::error!(client, %error, repeated, "kafka: {reason}"),
            _ => tracing::warn!(client, %error, repeated, "kafka: {reason}"),
        }
    }
}

impl ConsumerContext for ClientLog {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_same_kind_is_logged_once_per_interval_and_counts_the_rest() {
        let log = ClientLog::new("t");
        let a = kind_of(
            "FAIL",
            "127.0.0.1:35091/1: Connect failed (after 0ms in state CONNECT)",
        );
        let b = kind_of(
            "FAIL",
            "127.0.0.1:35091/1: Connect failed (after 12ms in state CONNECT)",
        );
        assert_eq!(a, b, "numbers do not make a new kind");
        assert_eq!(log.admit(&a), Some(0));
        assert_eq!(log.admit(&b), None);
        assert_eq!(log.admit(&b), None);
        assert_eq!(
            log.admit("error:Some(AllBrokersDown)"),
            Some(0),
            "another kind"
        );
        // Once the interval has passed, the next one is logged with the count it stood for.
        log.seen.lock().unwrap().get_mut(&a).unwrap().logged_at -= REPEAT_INTERVAL;
        assert_eq!(log.admit(&a), Some(2));
        assert_eq!(log.admit(&a), None);
    }
}
