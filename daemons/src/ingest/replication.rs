//! A replication connection to PostgreSQL streaming one logical slot (`START_REPLICATION
//! SLOT … LOGICAL`, pgoutput): the changes as the server decodes them, each once, and the
//! standby status updates that confirm how far the ingest has published.
//!
//! tokio-postgres has no replication mode, so the connection is made here: the messages
//! are framed and the passwords (cleartext, MD5, SCRAM-SHA-256) answered with
//! `postgres-protocol`, rust-postgres's own protocol crate, and TLS is the query session's
//! (the same `sslmode`, roots and host checks, through postgres-native-tls). What is
//! written by hand is the replication sub-protocol: XLogData, keepalives and status updates.

use super::pgoutput::Lsn;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

/// Why the replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server's error: its SQLSTATE and message.
    #[error("{message} ({code})")]
    Server { code: String, message: String },
    #[error("replication protocol: {0}")]
    Protocol(String),
}

impl ReplicationError {
    /// The server's SQLSTATE, when the server answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

fn protocol(what: impl Into<String>) -> ReplicationError {
    ReplicationError::Protocol(what.into())
}

/// What the server sends on the stream.
#[derive(Debug)]
pub enum StreamMessage {
    /// One pgoutput message, starting at `wal_start`.
    XLogData { wal_start: Lsn, data: Bytes },
    /// The server's position; `reply` asks for a status update now.
    Keepalive { wal_end: Lsn, reply: bool },
}

trait Socket: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Socket for T {}

/// A replication connection in streaming (CopyBoth) mode.
pub struct ReplicationStream {
    socket: Box<dyn Socket>,
    /// Bytes read and not yet framed; reads append here, so a read cut off by `select!`
    /// loses nothing.
    buffer: BytesMut,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

impl ReplicationStream {
    /// Connects as `config` says (its first host), authenticates, and starts streaming
    /// `slot` from its confirmed position.
    pub async fn start(
        config: &tokio_postgres::Config,
        tls: &postgres_native_tls::MakeTlsConnector,
        slot: &str,
        publication: &str,
    ) -> Result<Self, ReplicationError> {
        let timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        let socket = tokio::time::timeout(timeout, open_socket(config, tls))
            .await
            .map_err(|_| protocol(format!("no connection within {timeout:?}")))??;
        let mut stream = ReplicationStream {
            socket,
            buffer: BytesMut::with_capacity(64 * 1024),
        };
        tokio::time::timeout(timeout, stream.authenticate(config))
            .await
            .map_err(|_| protocol(format!("no session within {timeout:?}")))??;
        // Slot and publication names are checked to be plain identifiers (IngestConfig).
        let command = format!(
            "START_REPLICATION SLOT {slot} LOGICAL 0/0 \
             (\"proto_version\" '1', \"publication_names\" '{publication}')"
        );
        stream.send(|buf| frontend::query(&command, buf)).await?;
        loop {
            let (tag, body) = stream.frame().await?;
            match tag {
                b'W' => return Ok(stream),
                b'E' => return Err(server_error(&body)),
                b'N' | b'S' => {}
                other => {
                    return Err(protocol(format!(
                        "unexpected message {:?} after START_REPLICATION",
                        char::from(other)
                    )))
                }
            }
        }
    }

    async fn send(
        &mut self,
        write: impl FnOnce(&mut BytesMut) -> std::io::Result<()>,
    ) -> Result<(), ReplicationError> {
        let mut buf = BytesMut::new();
        write(&mut buf)?;
        self.socket.write_all(&buf).await?;
        self.socket.flush().await?;
        Ok(())
    }

    /// The next whole backend message: (tag, body). Cancel-safe: bytes read stay in the
    /// buffer.
    async fn frame(&mut self) -> Result<(u8, Bytes), ReplicationError> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                    self.buffer[4],
                ]) as usize;
                if len < 4 {
                    return Err(protocol(format!("message length {len}")));
                }
                if self.buffer.len() > len {
                    let mut frame = self.buffer.split_to(len + 1);
                    let tag = frame.get_u8();
                    frame.advance(4);
                    return Ok((tag, frame.freeze()));
                }
                self.buffer.reserve(len + 1 - self.buffer.len());
            }
            if self.socket.read_buf(&mut self.buffer).await? == 0 {
                return Err(ReplicationError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    }

    /// Startup as a replication connection and the password exchange the server asks for.
    async fn authenticate(
        &mut self,
        config: &tokio_postgres::Config,
    ) -> Result<(), ReplicationError> {
        let user = config.get_user().unwrap_or("postgres").to_owned();
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        let app = config
            .get_application_name()
            .unwrap_or("ordersd-ingest")
            .to_owned();
        let params = [
            ("user", user.as_str()),
            ("database", dbname.as_str()),
            ("replication", "database"),
            ("application_name", app.as_str()),
            ("client_encoding", "UTF8"),
        ];
        self.send(|buf| frontend::startup_message(params.iter().copied(), buf))
            .await?;
        let password = config.get_password().unwrap_or_default().to_vec();
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = self.frame().await?;
            match tag {
                b'R' => {
                    self.answer_authentication(body, &user, &password, &mut scram)
                        .await?
                }
                b'E' => return Err(server_error(&body)),
                b'Z' => return Ok(()),
                _ => {}
            }
        }
    }

    /// Answers one authentication request (`R`): cleartext, MD5, or a step of SCRAM-SHA-256
    /// (`scram` holds the exchange between steps); `0` says it is done.
    async fn answer_authentication(
        &mut self,
        mut body: Bytes,
        user: &str,
        password: &[u8],
        scram: &mut Option<ScramSha256>,
    ) -> Result<(), ReplicationError> {
        if body.len() < 4 {
            return Err(protocol("short authentication request"));
        }
        match body.get_i32() {
            0 => {}
            3 => {
                self.send(|b| frontend::password_message(password, b))
                    .await?
            }
            5 => {
                if body.len() < 4 {
                    return Err(protocol("short MD5 salt"));
                }
                let salt = [body[0], body[1], body[2], body[3]];
                let hash =
                    postgres_protocol::authentication::md5_hash(user.as_bytes(), password, salt);
                self.send(|b| frontend::password_message(hash.as_bytes(), b))
                    .await?;
            }
            10 => {
                let offered = c_strings(&body);
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(protocol(format!(
                        "the server offers {offered:?}, not {SCRAM_SHA_256}"
                    )));
                }
                // No channel binding: the mechanism without -PLUS, flag "n".
                let s = ScramSha256::new(password, ChannelBinding::unsupported());
                let first = s.message().to_vec();
                *scram = Some(s);
                self.send(|b| frontend::sasl_initial_response(SCRAM_SHA_256, &first, b))
                    .await?;
            }
            11 => {
                let s = scram.as_mut().ok_or_else(|| protocol("SASL out of turn"))?;
                s.update(&body)?;
                let next = s.message().to_vec();
                self.send(|b| frontend::sasl_response(&next, b)).await?;
            }
            12 => {
                let s = scram.as_mut().ok_or_else(|| protocol("SASL out of turn"))?;
                s.finish(&body)?;
            }
            other => {
                return Err(protocol(format!(
                    "authentication method {other} is not supported"
                )))
            }
        }
        Ok(())
    }

    /// The next message of the stream; cancel-safe.
    pub async fn next(&mut self) -> Result<StreamMessage, ReplicationError> {
        loop {
            let (tag, mut body) = self.frame().await?;
            match tag {
                b'd' => {
                    if body.is_empty() {
                        return Err(protocol("empty CopyData"));
                    }
                    match body.get_u8() {
                        b'w' if body.len() >= 24 => {
                            let wal_start = Lsn(body.get_u64());
                            let _wal_end = body.get_u64();
                            let _sent_at = body.get_i64();
                            return Ok(StreamMessage::XLogData {
                                wal_start,
                                data: body,
                            });
                        }
                        b'k' if body.len() >= 17 => {
                            let wal_end = Lsn(body.get_u64());
                            let _sent_at = body.get_i64();
                            let reply = body.get_u8() == 1;
                            return Ok(StreamMessage::Keepalive { wal_end, reply });
                        }
                        other => {
                            return Err(protocol(format!(
                                "unknown stream message {:?}",
                                char::from(other)
                            )))
                        }
                    }
                }
                b'E' => return Err(server_error(&body)),
                b'c' => return Err(protocol("the server ended the stream")),
                // Notices and parameter changes.
                _ => {}
            }
        }
    }

    /// A standby status update: everything up to `flushed` is published and may be
    /// released by the server (written, flushed and applied all say the same).
    pub async fn confirm(&mut self, flushed: Lsn) -> Result<(), ReplicationError> {
        let now = chrono::Utc::now().timestamp_micros() - PG_EPOCH_OFFSET_MICROS;
        let mut update = BytesMut::with_capacity(34);
        update.put_u8(b'r');
        for _ in 0..3 {
            update.put_u64(flushed.0);
        }
        update.put_i64(now);
        update.put_u8(0);
        self.send(|buf| frontend::CopyData::new(&update[..]).map(|d| d.write(buf)))
            .await
    }
}

/// The first host of `config`, over TLS when its `sslmode` asks for it.
async fn open_socket(
    config: &tokio_postgres::Config,
    tls: &postgres_native_tls::MakeTlsConnector,
) -> Result<Box<dyn Socket>, ReplicationError> {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(dir)) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            return Ok(Box::new(tokio::net::UnixStream::connect(path).await?));
        }
        None => "localhost".to_owned(),
    };
    let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    if config.get_ssl_mode() == SslMode::Disable {
        return Ok(Box::new(tcp));
    }
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let mut maker = tls.clone();
            let connector =
                MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut maker, &host)
                    .map_err(|e| protocol(format!("TLS setup: {e}")))?;
            let stream = connector
                .connect(tcp)
                .await
                .map_err(|e| protocol(format!("TLS: {e}")))?;
            Ok(Box::new(stream))
        }
        b'N' if config.get_ssl_mode() == SslMode::Prefer => Ok(Box::new(tcp)),
        b'N' => Err(protocol(
            "the server does not accept TLS, and sslmode requires it",
        )),
        other => Err(protocol(format!(
            "unexpected answer {other} to the TLS request"
        ))),
    }
}

/// NUL-terminated strings up to an empty one (the SASL mechanisms).
fn c_strings(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .take_while(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// An ErrorResponse: its SQLSTATE (`C`), and its message (`M`) with its detail (`D`).
fn server_error(body: &[u8]) -> ReplicationError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = String::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = value,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    if !detail.is_empty() {
        message = format!("{message}: {detail}");
    }
    ReplicationError::Server { code, message }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn server_errors_carry_their_sqlstate_and_message() {
        let body = b"SERROR\0C55000\0Mcannot read from logical replication slot \"s\"\0\
                     DThis slot has been invalidated.\0\0";
        let e = server_error(body);
        assert_eq!(e.code(), Some("55000"));
        assert_eq!(
            e.to_string(),
            "cannot read from logical replication slot \"s\": This slot has been invalidated. \
             (55000)"
        );
        assert_eq!(
            c_strings(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
            ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
        );
    }
}
