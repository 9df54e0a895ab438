//! `ordersd healthcheck`: asks the /healthz of the daemon on this machine, for container
//! health checks in an image that has no curl.

use anyhow::{bail, Context};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the whole check may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The address to ask: the ops address, with an unspecified host (`0.0.0.0`, `::`) made
/// loopback.
pub fn local_target(ops_addr: SocketAddr) -> SocketAddr {
    let mut target = ops_addr;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    target
}

/// Ok when `GET /healthz` on `ops_addr` answers 200; else an error with the answer.
pub async fn check(ops_addr: SocketAddr) -> anyhow::Result<()> {
    let target = local_target(ops_addr);
    let (status, body) = tokio::time::timeout(TIMEOUT, get_healthz(target))
        .await
        .with_context(|| format!("no answer from http://{target}/healthz within {TIMEOUT:?}"))?
        .with_context(|| format!("asking http://{target}/healthz"))?;
    if status != 200 {
        bail!("http://{target}/healthz answered {status}: {}", body.trim());
    }
    Ok(())
}

/// One HTTP/1.0 request: status code and body.
async fn get_healthz(target: SocketAddr) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(target).await?;
    stream
        .write_all(format!("GET /healthz HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .context("not an HTTP answer")?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
