//! The background task that polls the API and sends what it learns to the screen loop.
//!
//! The screen never waits on the network: this task owns every request and reports through
//! a channel; when the API goes away it backs off (1 s, 2 s, 4 s … 10 s) and keeps trying.
//! When the API refuses the credentials it says so once and stops: a wrong token does not
//! become right by asking again.

use super::api::{
    Alert, ApiClient, ApiError, Arrival, CanaryStatus, DeadLetter, GroupLag, MinuteWindow,
    OrderDetail, OrderDocument, Totals,
};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The endpoint a per-panel error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Totals,
    Orders,
    Alerts,
    Lag,
    DeadLetters,
    Canary,
}

/// News from the fetch task.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The API answered at this time.
    Connected(Instant),
    /// The API did not answer; the next try is at `retry_at`.
    Disconnected {
        error: String,
        retry_at: Instant,
    },
    /// The API refused the credentials; nothing more is fetched.
    Unauthorised(String),
    /// One endpoint answered with an error while the others worked.
    Failed(Panel, String),
    Totals(Instant, Totals),
    /// Newest first; may reach back further than one page after a gap.
    Orders(Vec<OrderDocument>),
    Alerts(Vec<Alert>),
    Lag(Vec<GroupLag>),
    /// `None`: the API has no canary endpoint.
    Canary(Option<CanaryStatus>),
    Detail(u64, Result<Option<Box<OrderDetail>>, String>),
    /// Dead letters not yet handled, the oldest first.
    DeadLetters(Vec<DeadLetter>),
    /// Orders per minute from the store, oldest first: the history the sparkline draws,
    /// which a console restart does not lose.
    Windows(Vec<MinuteWindow>),
    /// An operator's redrive or discard finished: what happened, or why it failed.
    DeadLetterActed(Result<String, String>),
}

/// What the screen wants fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    /// Stop polling the lists (the open detail is still refreshed).
    pub paused: bool,
    /// The order whose detail is open.
    pub detail: Option<u64>,
    /// The dead-letter pane is shown: fetch dead letters too (they are read from Kafka by
    /// the API, so only while someone looks).
    pub dead_letters: bool,
    /// Bumped by each request to retry now; a change wakes the fetcher from its backoff.
    pub retry: u32,
}

/// How often and how much to fetch.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub interval: Duration,
    /// Orders per request.
    pub page: usize,
    /// After a gap (a pause, an outage, a burst), how many older pages to fetch to close it.
    pub max_catch_up_pages: usize,
    pub alerts: usize,
    /// Minutes of orders-per-minute history, refreshed every `windows_every`.
    pub windows: usize,
    pub windows_every: Duration,
    /// Dead letters per request.
    pub dead_letters: usize,
    pub max_backoff: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            interval: Duration::from_secs(1),
            page: 500,
            max_catch_up_pages: 10,
            alerts: 200,
            windows: 180,
            windows_every: Duration::from_secs(10),
            dead_letters: 500,
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// The delay before retry number `failures` (1-based): doubling from 1 s up to `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(max)
}

/// The newest orders, and older pages until the last order already seen (or the page limit).
async fn orders_since(
    client: &ApiClient,
    settings: &FetchSettings,
    newest_seen: Option<Arrival>,
) -> Result<Vec<OrderDocument>, ApiError> {
    let first = client.orders(settings.page, None).await?;
    let mut docs = first.orders;
    let mut before = first.next_before;
    let mut pages = 1;
    while let (Some(seen), Some(cursor)) = (newest_seen, before) {
        let reached = docs.last().is_none_or(|d| d.arrival() <= seen);
        if reached || pages > settings.max_catch_up_pages {
            break;
        }
        let page = client.orders(settings.page, Some(cursor)).await?;
        if page.orders.is_empty() {
            break;
        }
        docs.extend(page.orders);
        before = page.next_before;
        pages += 1;
    }
    Ok(docs)
}

/// Polls until `shutdown`; every answer goes to `updates`. Returns when the screen is gone.
pub async fn poll(
    client: ApiClient,
    settings: FetchSettings,
    mut control: watch::Receiver<Control>,
    updates: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) {
    let mut poller = Poller {
        client,
        settings,
        newest_seen: None,
        failures: 0,
        windows_at: None,
    };
    loop {
        let Control {
            paused,
            detail,
            dead_letters,
            ..
        } = *control.borrow_and_update();
        let mut round = Round::default();
        if !paused {
            poller.lists(&mut round, dead_letters).await;
        }
        if let Some(id) = detail {
            poller.detail(&mut round, id).await;
        }
        if let Some(e) = round.refused {
            tracing::warn!(api = poller.client.base(), error = %e, "the API refused the credentials; not polling");
            let _ = updates.send(Update::Unauthorised(e.to_string())).await;
            shutdown.cancelled().await;
            return;
        }
        let wait = poller.settle(&mut round);
        for update in round.news {
            if updates.send(update).await.is_err() {
                return;
            }
        }
        if !next_round(&mut control, &shutdown, wait).await {
            return;
        }
    }
}

/// What one round of requests learnt.
#[derive(Default)]
struct Round {
    news: Vec<Update>,
    /// The API did not answer (the last such error).
    unreachable: Option<ApiError>,
    /// The API refused the credentials.
    refused: Option<ApiError>,
    /// Some endpoint answered, if only with an error of its own.
    answered: bool,
}

impl Round {
    /// Files one endpoint's answer: news, a per-panel failure, or the API gone or refusing.
    fn note(&mut self, result: Result<Update, (Panel, ApiError)>) {
        match result {
            Ok(u) => {
                self.answered = true;
                self.news.push(u);
            }
            Err((_, e)) if e.is_unreachable() => self.unreachable = Some(e),
            Err((_, e @ ApiError::Unauthorised(_))) => self.refused = Some(e),
            Err((panel, e)) => {
                self.answered = true;
                self.news.push(Update::Failed(panel, e.to_string()));
            }
        }
    }
}

/// The fetch task's memory between rounds.
struct Poller {
    client: ApiClient,
    settings: FetchSettings,
    /// The newest order arrival seen, where the next catch-up stops.
    newest_seen: Option<Arrival>,
    /// Rounds in a row the API did not answer.
    failures: u32,
    /// When the per-minute windows were last fetched.
    windows_at: Option<Instant>,
}

impl Poller {
    /// Fetches the lists (totals, orders, alerts, lag, canary; dead letters when shown; the
    /// windows when due).
    async fn lists(&mut self, round: &mut Round, dead_letters: bool) {
        let client = &self.client;
        let (totals, orders, alerts, lag, canary) = tokio::join!(
            client.totals(),
            orders_since(client, &self.settings, self.newest_seen),
            client.alerts(self.settings.alerts),
            client.lag(),
            client.canary(),
        );
        let at = Instant::now();
        if let Ok(docs) = &orders {
            if let Some(max) = docs.iter().map(OrderDocument::arrival).max() {
                self.newest_seen = Some(self.newest_seen.map_or(max, |n| n.max(max)));
            }
        }
        round.note(
            totals
                .map(|t| Update::Totals(at, t))
                .map_err(|e| (Panel::Totals, e)),
        );
        round.note(orders.map(Update::Orders).map_err(|e| (Panel::Orders, e)));
        round.note(alerts.map(Update::Alerts).map_err(|e| (Panel::Alerts, e)));
        round.note(lag.map(Update::Lag).map_err(|e| (Panel::Lag, e)));
        round.note(canary.map(Update::Canary).map_err(|e| (Panel::Canary, e)));
        if dead_letters {
            round.note(
                client
                    .dead_letters(self.settings.dead_letters)
                    .await
                    .map(Update::DeadLetters)
                    .map_err(|e| (Panel::DeadLetters, e)),
            );
        }
        self.windows(round).await;
    }

    /// The history changes once a minute: asked for now and then, not every poll. Not after
    /// a refusal or while unreachable: one failed round asks once each.
    async fn windows(&mut self, round: &mut Round) {
        let due = self
            .windows_at
            .is_none_or(|t| t.elapsed() >= self.settings.windows_every);
        if due && round.refused.is_none() && round.unreachable.is_none() {
            match self.client.windows(self.settings.windows).await {
                Ok(w) => {
                    self.windows_at = Some(Instant::now());
                    round.news.push(Update::Windows(w));
                }
                // An older API without windows: the sparkline keeps its own history.
                Err(e) => tracing::debug!(error = %e, "no per-minute windows"),
            }
        }
    }

    /// Refreshes the open order's detail.
    async fn detail(&self, round: &mut Round, id: u64) {
        match self.client.order(id).await {
            Err(e) if e.is_unreachable() => round.unreachable = Some(e),
            Err(e @ ApiError::Unauthorised(_)) => round.refused = Some(e),
            result => {
                round.answered = true;
                round.news.push(Update::Detail(
                    id,
                    result.map(|d| d.map(Box::new)).map_err(|e| e.to_string()),
                ));
            }
        }
    }

    /// Adds connected or disconnected to the round's news; the wait before the next round
    /// (backing off while the API does not answer).
    fn settle(&mut self, round: &mut Round) -> Duration {
        let mut wait = self.settings.interval;
        if round.answered {
            self.failures = 0;
            round.news.push(Update::Connected(Instant::now()));
        } else if let Some(e) = &round.unreachable {
            self.failures = self.failures.saturating_add(1);
            wait = backoff(self.failures, self.settings.max_backoff);
            tracing::warn!(api = self.client.base(), error = %e, retry_in = ?wait, "API unreachable");
            round.news.push(Update::Disconnected {
                error: e.to_string(),
                retry_at: Instant::now() + wait,
            });
        }
        wait
    }
}

/// Waits `wait` or until the screen asks for something; while paused with nothing open, until
/// told otherwise. False when it is time to stop.
async fn next_round(
    control: &mut watch::Receiver<Control>,
    shutdown: &CancellationToken,
    wait: Duration,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => return false,
        _ = tokio::time::sleep(wait) => {}
        changed = control.changed() => {
            if changed.is_err() {
                return false;
            }
        }
    }
    while control.borrow().paused && control.borrow().detail.is_none() {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            changed = control.changed() => if changed.is_err() { return false },
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=6).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(u32::MAX, max), max);
    }
}
