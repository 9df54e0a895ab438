//! A short-lived cache of successful answers of the store-backed list endpoints, keyed by
//! path and query. Dashboards, consoles and scripts poll the same few URLs every second or
//! so; within the time to live (250 ms by default) they share one store read instead of
//! each making their own. Answers are at most that much older than the store, which is
//! far below the pipeline's own latency. A time to live of zero turns it off.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an answer is reused, by default.
pub const DEFAULT_TTL: Duration = Duration::from_millis(250);
/// Bounds on what is kept: entries, and bytes of bodies.
const MAX_ENTRIES: usize = 256;
const MAX_BYTES: usize = 16 << 20;
/// Bodies larger than this are not kept (a 1000-order page is about 370 KB).
const MAX_BODY: usize = 1 << 20;

struct Entry {
    at: Instant,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

pub struct ResponseCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl ResponseCache {
    pub fn new(ttl: Duration) -> Self {
        ResponseCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<Response> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(key)?;
        if e.at.elapsed() >= self.ttl {
            return None;
        }
        let mut response = Response::new(Body::from(e.body.clone()));
        if let Some(ct) = &e.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, ct.clone());
        }
        Some(response)
    }

    fn put(&self, key: String, content_type: Option<HeaderValue>, body: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = entries.values().map(|e| e.body.len()).sum();
        if entries.len() >= MAX_ENTRIES || held + body.len() > MAX_BYTES {
            let ttl = self.ttl;
            entries.retain(|_, e| e.at.elapsed() < ttl);
            let held: usize = entries.values().map(|e| e.body.len()).sum();
            if entries.len() >= MAX_ENTRIES || held + body.len() > MAX_BYTES {
                return;
            }
        }
        entries.insert(
            key,
            Entry {
                at: Instant::now(),
                content_type,
                body,
            },
        );
    }
}

/// The middleware: answers from the cache when it can, else keeps a fresh 200 answer.
pub async fn layer(
    State(cache): State<Arc<ResponseCache>>,
    request: Request,
    next: Next,
) -> Response {
    if cache.ttl.is_zero() || request.method() != Method::GET {
        return next.run(request).await;
    }
    let key = request.uri().to_string();
    if let Some(hit) = cache.get(&key) {
        return hit;
    }
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Handlers build their bodies in memory, so reading one whole costs nothing new.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            if bytes.len() <= MAX_BODY {
                let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
                cache.put(key, content_type, bytes.clone());
            }
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(e) => {
            crate::AppError::Internal(format!("reading a response body: {e}")).into_response()
        }
    }
}
