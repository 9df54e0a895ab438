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
    /// The last failed connection librdkafka reported: broker and cause.
    last_failure: Mutex<Option<(String, ConnectionCause)>>,
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
            last_failure: Mutex::new(None),
        }
    }

    /// The last connection failure reported to this client, as "broker B (cause)".
    pub fn last_connection_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(broker, cause)| format!("broker {broker} ({})", cause.as_str()))
    }

    /// Reads a connection failure out of `message`, remembering it.
    fn failure(&self, message: &str) -> Option<(String, ConnectionCause)> {
        let failure = connection_failure(message)?;
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(failure.clone());
        Some(failure)
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

/// Why a connection to a broker failed, in the words an operator searches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionCause {
    /// Nothing listens there (wrong port, broker down).
    Refused,
    /// The host name does not resolve.
    Dns,
    /// No answer in time (firewall, wrong host, network).
    Timeout,
    /// The broker refused the credentials (SASL).
    Auth,
    /// The TLS handshake failed (certificate, or TLS against a plaintext port).
    Tls,
    /// The broker closed the connection (often: plaintext against a TLS port).
    Disconnected,
}

impl ConnectionCause {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionCause::Refused => "refused",
            ConnectionCause::Dns => "dns",
            ConnectionCause::Timeout => "timeout",
            ConnectionCause::Auth => "auth",
            ConnectionCause::Tls => "tls",
            ConnectionCause::Disconnected => "disconnected",
        }
    }
}

/// A failed connection read from a librdkafka message: the broker (as
/// `host:port`) and the cause, when the message is one.
pub fn connection_failure(message: &str) -> Option<(String, ConnectionCause)> {
    let lower = message.to_ascii_lowercase();
    let cause = if lower.contains("connection refused") {
        ConnectionCause::Refused
    } else if lower.contains("failed to resolve") || lower.contains("name or service not known") {
        ConnectionCause::Dns
    } else if lower.contains("sasl authentication") || lower.contains("authentication failed") {
        ConnectionCause::Auth
    } else if lower.contains("ssl handshake")
        || lower.contains("ssl_")
        || lower.contains("certificate")
    {
        ConnectionCause::Tls
    } else if lower.contains("timed out") || lower.contains("timeout") {
        ConnectionCause::Timeout
    } else if lower.contains("disconnected") {
        ConnectionCause::Disconnected
    } else {
        return None;
    };
    // librdkafka names the broker first: "sasl_ssl://host:9092/bootstrap: ...",
    // "127.0.0.1:9092/1: ...", in log lines after its thread's name
    // ("[thrd:...]: "). Fall back to the name in "Failed to resolve 'host:port'".
    let message = match message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(message, |(_, m)| m),
        None => message,
    };
    let named = message
        .split_once(": ")
        .map(|(head, _)| head)
        .filter(|head| head.contains(':') && !head.contains(' '))
        .map(|head| {
            let head = head.split_once("://").map_or(head, |(_, rest)| rest);
            head.rsplit_once('/')
                .map_or(head, |(broker, _)| broker)
                .to_owned()
        });
    let quoted = || {
        let (_, rest) = message.split_once('\'')?;
        let (broker, _) = rest.split_once('\'')?;
        Some(broker.to_owned())
    };
    let broker = named
        .or_else(quoted)
        .unwrap_or_else(|| "unknown broker".to_owned());
    Some((broker, cause))
}

/// The kind of a librdkafka log line: its facility and text with numbers (ports, times,
/// counts) left out, so reconnect attempts to one broker count as one kind.
fn kind_of(fac: &str, message: &str) -> String {
    let text: String = message.chars().filter(|c| !c.is_ascii_digit()).collect();
    format!("{fac}:{text}")
}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let failure = self.failure(message);
        let Some(repeated) = self.admit(&kind_of(fac, message)) else {
            return;
        };
        let client = self.client.as_str();
        if let Some((broker, cause)) = failure {
            let cause = cause.as_str();
            match level {
                RDKafkaLogLevel::Debug => {
                    tracing::debug!(target: "librdkafka", client, %broker, cause, repeated,
                    "kafka: cannot reach broker {broker} ({cause}): {message}")
                }
                RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                    tracing::info!(target: "librdkafka", client, %broker, cause, repeated,
                    "kafka: cannot reach broker {broker} ({cause}): {message}")
                }
                RDKafkaLogLevel::Warning => {
                    tracing::warn!(target: "librdkafka", client, %broker, cause, repeated,
                    "kafka: cannot reach broker {broker} ({cause}): {message}")
                }
                _ => tracing::error!(target: "librdkafka", client, %broker, cause, repeated,
                    "kafka: cannot reach broker {broker} ({cause}): {message}"),
            }
            return;
        }
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
        let failure = self.failure(reason);
        let code = error.rdkafka_error_code();
        let Some(repeated) = self.admit(&format!("error:{code:?}")) else {
            return;
        };
        let client = self.client.as_str();
        if let Some((broker, cause)) = failure {
            let cause = cause.as_str();
            match cause {
                "auth" => tracing::error!(client, %broker, cause, %error, repeated,
                    "kafka: cannot reach broker {broker} ({cause}): {reason}"),
                _ => tracing::warn!(client, %broker, cause, %error, repeated,
                    "kafka: cannot reach broker {broker} ({cause}): {reason}"),
            }
            return;
        }
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
    fn connection_failures_name_the_broker_and_the_cause() {
        let cases = [
            (
                "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)",
                "127.0.0.1:1",
                ConnectionCause::Refused,
            ),
            (
                "nosuchhost.invalid:9092/bootstrap: Failed to resolve 'nosuchhost.invalid:9092': Name or service not known (after 3ms in state CONNECT)",
                "nosuchhost.invalid:9092",
                ConnectionCause::Dns,
            ),
            (
                "sasl_ssl://pkc-123.us-east-1.aws.confluent.cloud:9092/bootstrap: SASL authentication error: Authentication failed (after 312ms in state AUTH_REQ)",
                "pkc-123.us-east-1.aws.confluent.cloud:9092",
                ConnectionCause::Auth,
            ),
            (
                "10.0.0.9:9092/1: Connection setup timed out in state CONNECT (after 30027ms in state CONNECT)",
                "10.0.0.9:9092",
                ConnectionCause::Timeout,
            ),
            (
                "ssl://b1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
                "b1:9093",
                ConnectionCause::Tls,
            ),
        ];
        let threaded = "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)";
        assert_eq!(
            connection_failure(threaded),
            Some(("127.0.0.1:1".to_owned(), ConnectionCause::Refused))
        );
        let log = ClientLog::new("t");
        assert_eq!(log.last_connection_failure(), None);
        log.failure(threaded);
        assert_eq!(
            log.last_connection_failure().as_deref(),
            Some("broker 127.0.0.1:1 (refused)")
        );
        for (message, broker, cause) in cases {
            assert_eq!(
                connection_failure(message),
                Some((broker.to_owned(), cause)),
                "{message}"
            );
        }
        assert_eq!(connection_failure("Group \"x\" joined"), None);
    }

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
