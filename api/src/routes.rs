//! The endpoints: one handler each, documented for OpenAPI where it answers JSON.

use crate::error::{AppError, ErrorBody, ErrorDetail};
use crate::lag::LagUnavailable;
use crate::model::*;
use crate::query::{self, LimitParams, NoParams, OrdersParams, StrictQuery, WindowParams};
use crate::readiness;
use crate::web;
use crate::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use orders_core::kafka::ORDER_GROUPS;
use orders_core::store::{minute_of, OrderDocument, StoreError, WINDOW_MICROS};
use orders_core::Timestamp;
use std::time::Duration;

/// How long `/api/lag` waits for the first sample after start.
const FIRST_SAMPLE_WAIT: Duration = Duration::from_secs(5);

/// Liveness: answers as long as the process serves HTTP; checks nothing else.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = HealthBody)))]
pub async fn healthz() -> Json<HealthBody> {
    Json(HealthBody { status: "ok" })
}

/// Readiness: the store answers a ping and Kafka answers a metadata request.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 503, description = "A dependency failed; `checks` names it", body = ReadyBody),
    ))]
pub async fn readyz(
    State(state): State<AppState>,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Response {
    // In the process that also writes the store (`ordersctl up`), failing writes make it
    // not ready even though reads still answer.
    let store = readiness::store(state.store.as_ref(), state.progress().map(|p| p.as_ref()));
    let kafka = async {
        match state.lag.clone() {
            Some(monitor) => readiness::kafka(move |timeout| monitor.ping_blocking(timeout)).await,
            None => "not_configured",
        }
    };
    let (store, kafka) = tokio::join!(store, kafka);
    // Ready means both answer: a server given no Kafka cannot report lag or journeys, so
    // it is not ready either (and says why), though it keeps serving what the store has.
    let failed: Vec<String> = [("store", store), ("kafka", kafka)]
        .into_iter()
        .filter(|(_, s)| *s != "ok")
        .map(|(n, s)| format!("{n} {}", s.replace('_', " ")))
        .collect();
    let checks = ReadyChecks { store, kafka };
    if failed.is_empty() {
        Json(ReadyBody {
            status: "ready",
            checks,
            error: None,
        })
        .into_response()
    } else {
        let body = ReadyBody {
            status: "not_ready",
            checks,
            error: Some(ErrorDetail {
                code: "not_ready".into(),
                message: format!("not ready: {}", failed.join(", ")),
            }),
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// The latest orders in the shape the old React page read.
#[utoipa::path(get, path = "/api/analytics", tag = "orders", params(LimitParams),
    responses(
        (status = 200, body = AnalyticsBody),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn analytics(
    State(state): State<AppState>,
    StrictQuery(p): StrictQuery<LimitParams>,
) -> Result<Json<AnalyticsBody>, AppError> {
    let q = orders_core::store::OrderQuery {
        limit: query::limit(p.limit.as_deref(), 10)?,
        ..Default::default()
    };
    let orders = state.store.latest_orders(&q).await?;
    Ok(Json(AnalyticsBody {
        status: "ok",
        orders: orders.iter().map(Into::into).collect(),
    }))
}

/// Orders, newest first, filtered, a page at a time.
#[utoipa::path(get, path = "/api/orders", tag = "orders", params(OrdersParams),
    responses(
        (status = 200, body = OrdersPage),
        (status = 400, description = "Bad or unknown parameter", body = ErrorBody),
        (status = 414, description = "Query string over 2 KiB", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn orders(
    State(state): State<AppState>,
    StrictQuery(p): StrictQuery<OrdersParams>,
) -> Result<Json<OrdersPage>, AppError> {
    let mut q = p.to_query()?;
    let limit = q.limit;
    // One more than asked tells whether another page exists.
    q.limit += 1;
    let mut docs = state.store.latest_orders(&q).await?;
    let next_before = if docs.len() > limit {
        docs.truncate(limit);
        docs.last().map(|d| d.order.order_id)
    } else {
        None
    };
    Ok(Json(OrdersPage {
        orders: docs.iter().map(Into::into).collect(),
        next_before,
    }))
}

/// One order and where it is in the pipeline.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = u64, Path, description = "Order id", minimum = 1)),
    responses(
        (status = 200, body = OrderDetail),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn order(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Result<Json<OrderDetail>, AppError> {
    let Path(raw) = id.map_err(|e| AppError::invalid(e.body_text()))?;
    let id = query::order_id("order id", &raw)?;
    let doc = state
        .store
        .order(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no order {id}")))?;
    // Judge "clear" from offsets read before the alert is looked up (see `fraud_cleared`).
    let cleared = state
        .lag
        .as_ref()
        .is_some_and(|m| m.fraud_cleared(doc.kafka_partition, doc.kafka_offset));
    let (alert, payment) = tokio::join!(state.store.alert(id), state.store.payment(id));
    let (alert, payment) = (alert?, payment?);
    let journey = journey(&state, &doc, cleared, alert, payment);
    Ok(Json(OrderDetail {
        order: (&doc).into(),
        journey,
    }))
}

fn journey(
    state: &AppState,
    doc: &OrderDocument,
    cleared: bool,
    alert: Option<orders_core::store::StoredAlert>,
    payment: Option<orders_core::store::StoredPayment>,
) -> Journey {
    let snapshot = state.lag.as_ref().and_then(|m| m.latest().ok());
    // What the store holds proves those groups past the order even when the offsets
    // sample predates it: the journey reads one consistent view.
    let seen = orders_core::lag::SeenEffects {
        stored: true,
        alerted: alert.is_some(),
        payment_stored: payment.is_some(),
    };
    let fraud = match alert {
        Some(a) => FraudStep {
            decision: "alert",
            reason: Some(a.alert.reason),
            rule_id: a.alert.rule_id,
            at: Some(a.alert.detected_at.unwrap_or(a.stored_at).to_rfc3339()),
        },
        None => FraudStep {
            decision: if cleared {
                "clear"
            } else if snapshot.is_some() {
                "pending"
            } else {
                "unknown"
            },
            reason: None,
            rule_id: None,
            at: None,
        },
    };
    let payment = match payment {
        Some(p) => PaymentStep {
            status: p.payment.status.as_str().to_owned(),
            at: Timestamp::from_micros((p.payment.timestamp * 1e6) as i64).map(|t| t.to_rfc3339()),
        },
        None => PaymentStep {
            status: "PENDING".into(),
            at: None,
        },
    };
    let topic = state.lag.as_ref().map(|m| m.orders_topic().to_owned());
    let groups_behind = snapshot.as_ref().zip(topic.as_deref()).map(|(s, topic)| {
        ORDER_GROUPS
            .iter()
            .filter(|g| !seen.prove_past(g))
            .filter(|g| {
                !s.group(g)
                    .and_then(|g| g.lag.partition(topic, doc.kafka_partition))
                    .is_some_and(|p| p.has_passed(doc.kafka_offset))
            })
            .map(|g| (*g).to_owned())
            .collect()
    });
    Journey {
        created: TimeStep {
            at: doc.order.created_at.to_rfc3339(),
        },
        fraud,
        payment,
        stored: TimeStep {
            at: doc.processed_at.to_rfc3339(),
        },
        groups_behind,
        offsets_sampled_at: snapshot.map(|s| s.taken_at.to_rfc3339()),
    }
}

/// The latest fraud alerts.
#[utoipa::path(get, path = "/api/alerts", tag = "orders", params(LimitParams),
    responses((status = 200, body = AlertsBody), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn alerts(
    State(state): State<AppState>,
    StrictQuery(p): StrictQuery<LimitParams>,
) -> Result<Json<AlertsBody>, AppError> {
    let limit = query::limit(p.limit.as_deref(), query::DEFAULT_LIMIT)?;
    let alerts = state.store.latest_alerts(limit).await?;
    Ok(Json(AlertsBody {
        alerts: alerts.iter().map(Into::into).collect(),
    }))
}

/// The latest payment results.
#[utoipa::path(get, path = "/api/payments", tag = "orders", params(LimitParams),
    responses((status = 200, body = PaymentsBody), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn payments(
    State(state): State<AppState>,
    StrictQuery(p): StrictQuery<LimitParams>,
) -> Result<Json<PaymentsBody>, AppError> {
    let limit = query::limit(p.limit.as_deref(), query::DEFAULT_LIMIT)?;
    let payments = state.store.latest_payments(limit).await?;
    Ok(Json(PaymentsBody {
        payments: payments.iter().map(Into::into).collect(),
    }))
}

/// Orders per minute of creation time over the last `minutes` (the current minute last, so
/// far), each with its sales and countries: tumbling windows kept exact by the store like
/// the totals, so they survive restarts and redelivery.
#[utoipa::path(get, path = "/api/totals/windows", tag = "orders", params(WindowParams),
    responses((status = 200, body = WindowsBody), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn windows(
    State(state): State<AppState>,
    StrictQuery(p): StrictQuery<WindowParams>,
) -> Result<Json<WindowsBody>, AppError> {
    let minutes = query::window_minutes(p.minutes.as_deref())?;
    let current = minute_of(Timestamp::now().micros());
    let from = current - (minutes as i64 - 1) * WINDOW_MICROS;
    let to = current + WINDOW_MICROS;
    let mut stored = state
        .store
        .minute_windows(from, to)
        .await?
        .into_iter()
        .peekable();
    let mut windows = Vec::with_capacity(minutes);
    for i in 0..minutes as i64 {
        let minute = from + i * WINDOW_MICROS;
        let at = Timestamp::from_micros(minute)
            .ok_or_else(|| AppError::Internal(format!("minute {minute} out of range")))?;
        let w = stored.next_if(|w| w.minute.micros() == minute);
        windows.push(MinuteWindowBody {
            minute: at.to_string(),
            order_count: w.as_ref().map_or(0, |w| w.order_count),
            total_sales: w.as_ref().map_or(0.0, |w| w.total_sales.dollars()),
            by_country: w
                .as_ref()
                .map(|w| {
                    w.by_country
                        .iter()
                        .map(|(k, v)| (k.clone(), v.into()))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(Json(WindowsBody { minutes, windows }))
}

/// Totals over every stored order (kept by the store as orders arrive; never a scan).
#[utoipa::path(get, path = "/api/totals", tag = "orders",
    responses((status = 200, body = TotalsBody), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn totals(
    State(state): State<AppState>,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Result<Json<TotalsBody>, AppError> {
    let totals = state.store.totals().await?;
    Ok(Json((&totals).into()))
}

fn lag_error(e: LagUnavailable) -> AppError {
    AppError::KafkaUnavailable(e.to_string())
}

/// Consumer lag per group and partition, with a Burrow-style status per group.
#[utoipa::path(get, path = "/api/lag", tag = "lag",
    responses((status = 200, body = LagBody), (status = 400, body = ErrorBody),
              (status = 503, description = "Kafka not configured or not answering", body = ErrorBody)))]
pub async fn lag(
    State(state): State<AppState>,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Result<Json<LagBody>, AppError> {
    let monitor = state
        .lag
        .as_ref()
        .ok_or_else(|| AppError::KafkaUnavailable("no Kafka configured".into()))?;
    let snapshot = monitor
        .latest_or_wait(FIRST_SAMPLE_WAIT)
        .await
        .map_err(lag_error)?;
    Ok(Json(LagBody::new(&snapshot, monitor.options().interval)))
}

/// The canary orders' journeys: the last one, percentiles over the last
/// [`crate::canary::CANARY_WINDOW`], and the newest canaries. Canaries never count in the
/// orders, alerts, payments or totals; this is where they show.
#[utoipa::path(get, path = "/api/canary", tag = "canary",
    responses(
        (status = 200, description = "Canary journeys", body = CanaryBody),
        (status = 503, description = "The store cannot be read", body = ErrorBody),
    ))]
pub async fn canary(
    State(state): State<AppState>,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Result<Json<CanaryBody>, AppError> {
    // Fresh enough when the monitor polls; read now when it has not (yet).
    let stale = state
        .canary
        .report()
        .ok()
        .and_then(|b| b.polled_at)
        .is_none_or(|t| {
            Timestamp::now().micros() - t.micros()
                > 2 * crate::canary::CANARY_POLL_INTERVAL.as_micros() as i64
        });
    if stale {
        state.canary.poll(state.store.as_ref()).await?;
    }
    state
        .canary
        .report()
        .map(Json)
        .map_err(|e| AppError::Store(StoreError::Unavailable(e)))
}

/// Prometheus metrics.
pub async fn metrics(
    State(state): State<AppState>,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition(&state),
    )
        .into_response()
}

/// Everything the api exports: its requests, the consumer groups' lag and status, the
/// dead letters, the canaries, and the pipeline's counters when it runs in this process.
/// Served on `/metrics` (behind the api's auth) and on the ops port's `/metrics`.
pub(crate) fn exposition(state: &AppState) -> String {
    let lag = state.lag.as_ref().and_then(|m| m.latest().ok());
    let mut text = state
        .metrics
        .render(state.progress.as_deref(), lag.as_deref());
    let kafka = state
        .kafka
        .clone()
        .zip(state.lag.as_ref().map(|m| m.orders_topic().to_owned()));
    text.push_str(&state.dead_letter_metrics.render(kafka));
    state.canary.render(&mut text);
    text
}

fn public_reason(e: &StoreError) -> String {
    tracing::error!(error = %e, "web view: store failed");
    AppError::Store(StoreError::Unavailable(String::new()))
        .body()
        .error
        .message
}

/// The web view.
pub async fn index(
    State(state): State<AppState>,
    StrictQuery(p): StrictQuery<crate::query::IndexParams>,
) -> Response {
    let canaries = match p.canaries.as_deref() {
        None | Some("false") => None,
        Some("true") => {
            let _ = state.canary.poll(state.store.as_ref()).await;
            Some(state.canary.report())
        }
        Some(other) => {
            return AppError::invalid(format!("canaries must be true or false, not {other:?}"))
                .into_response()
        }
    };
    let q = orders_core::store::OrderQuery {
        limit: 20,
        ..Default::default()
    };
    let (totals, orders, alerts) = tokio::join!(
        state.store.totals(),
        state.store.latest_orders(&q),
        state.store.latest_alerts(8)
    );
    let store_down = totals.is_err();
    let lag = state.lag.as_ref().map(|m| {
        m.latest()
            .map(|s| s.groups.iter().map(Into::into).collect())
            .map_err(|e| {
                tracing::warn!(error = %e, "web view: lag unavailable");
                "Kafka is not answering".to_owned()
            })
    });
    let page = web::render(&web::Dashboard {
        generated_at: Timestamp::now().to_rfc3339(),
        totals: totals.map(|t| (&t).into()).map_err(|e| public_reason(&e)),
        orders: orders
            .map(|o| o.iter().map(Into::into).collect())
            .map_err(|e| public_reason(&e)),
        alerts: alerts
            .map(|a| a.iter().map(Into::into).collect())
            .map_err(|e| public_reason(&e)),
        lag,
        canaries,
    });
    let status = if store_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Html(page)).into_response()
}
