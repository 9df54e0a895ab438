//! Everything the console knows and shows: data from the API and the operator's place in it.
//!
//! Changed only by [`App::apply`] (news from the fetch tasks), [`App::tick`] (time passing),
//! [`App::resize`] and the key handling in `keys`; read by `draw`.

use super::api::{
    Alert, Arrival, CanaryStatus, DeadLetter, GroupLag, MinuteWindow, OrderDetail, OrderDocument,
    Totals,
};
use super::fetch::{Control, Panel, Update};
use super::filter::{Filter, FilterError};
use super::layout;
use super::theme::Theme;
use orders_core::dead_letters::Coordinates;
use ratatui::layout::Rect;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Orders held in memory unless told otherwise; the newest are kept.
pub const DEFAULT_MAX_ORDERS: usize = 10_000;

/// How long the orders/s history goes back.
pub const RATE_HISTORY: Duration = Duration::from_secs(15 * 60);
/// The orders/s figure is the average over this span.
const RATE_SPAN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Orders,
    Alerts,
    /// Takes the whole middle of the screen (orders and alerts) while focused.
    DeadLetters,
}

impl Pane {
    /// The pane `Tab` moves to.
    pub fn next(self) -> Pane {
        match self {
            Pane::Orders => Pane::Alerts,
            Pane::Alerts => Pane::DeadLetters,
            Pane::DeadLetters => Pane::Orders,
        }
    }

    /// The pane `Shift-Tab` moves to.
    pub fn previous(self) -> Pane {
        match self {
            Pane::Orders => Pane::DeadLetters,
            Pane::Alerts => Pane::Orders,
            Pane::DeadLetters => Pane::Alerts,
        }
    }
}

/// Whether the API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No answer yet since start.
    Connecting,
    Connected,
    /// The last attempt got no answer; the next is at `retry_at`.
    Disconnected {
        error: String,
        retry_at: Instant,
    },
    /// The API refused the credentials; the console no longer asks.
    Unauthorised(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum DetailData {
    Loading,
    Loaded(Box<OrderDetail>),
    NotFound,
    Failed(String),
}

/// The order detail overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct DetailView {
    pub order_id: u64,
    pub data: DetailData,
    pub scroll: u16,
}

/// What an operator can do with a dead letter from the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterActionKind {
    /// Send it back to its source topic.
    Redrive,
    /// Mark it handled without sending it.
    Discard,
}

impl DeadLetterActionKind {
    pub fn verb(self) -> &'static str {
        match self {
            DeadLetterActionKind::Redrive => "redrive",
            DeadLetterActionKind::Discard => "discard",
        }
    }

    pub fn doing(self) -> &'static str {
        match self {
            DeadLetterActionKind::Redrive => "redriving",
            DeadLetterActionKind::Discard => "discarding",
        }
    }
}

/// An action on one dead letter, asked for by the operator (after a confirmation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRequest {
    pub kind: DeadLetterActionKind,
    pub at: Coordinates,
    /// Where a redrive sends it (the `dlq.topic` header), for the confirmation.
    pub to: Option<String>,
    pub reason: String,
    pub key: Option<String>,
}

/// A line the status bar shows for a while: the outcome of an operator's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub ok: bool,
    pub at: Instant,
}

/// How long a [`Notice`] stays on the status line.
pub const NOTICE_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    None,
    Help,
    Detail(DetailView),
    /// One dead letter: its value and every header.
    DeadLetter {
        letter: Box<DeadLetter>,
        scroll: u16,
    },
    /// "Redrive …? y/n".
    Confirm(DeadLetterRequest),
}

/// The filter being typed after `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterInput {
    pub text: String,
    pub error: Option<FilterError>,
    /// What to go back to on Esc.
    pub previous: Filter,
}

/// A selection in a list and the first row shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scroll {
    pub selected: usize,
    pub offset: usize,
}

impl Scroll {
    /// Keeps the selection inside the list and on screen.
    pub fn clamp(&mut self, len: usize, rows: usize) {
        let rows = rows.max(1);
        self.selected = self.selected.min(len.saturating_sub(1));
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + rows {
            self.offset = self.selected + 1 - rows;
        }
        self.offset = self.offset.min(len.saturating_sub(rows));
    }

    pub fn move_by(&mut self, delta: isize, len: usize, rows: usize) {
        self.selected = self.selected.saturating_add_signed(delta);
        self.clamp(len, rows);
    }

    pub fn top(&mut self) {
        *self = Scroll::default();
    }

    pub fn bottom(&mut self, len: usize, rows: usize) {
        self.selected = len.saturating_sub(1);
        self.clamp(len, rows);
    }
}

/// Successive order counts, from which orders/s is derived.
#[derive(Debug, Clone, Default)]
pub struct RateHistory {
    samples: VecDeque<(Instant, u64)>,
}

impl RateHistory {
    pub fn push(&mut self, at: Instant, order_count: u64) {
        if self
            .samples
            .back()
            .is_some_and(|&(t, c)| order_count < c || at < t)
        {
            // A store that was reset, or a clock that went back: start over.
            self.samples.clear();
        }
        self.samples.push_back((at, order_count));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| at.duration_since(t) > RATE_HISTORY)
        {
            self.samples.pop_front();
        }
    }

    /// The order count last known at `t`.
    fn count_at(&self, t: Instant) -> Option<u64> {
        let i = self.samples.partition_point(|&(at, _)| at <= t);
        i.checked_sub(1).map(|i| self.samples[i].1)
    }

    /// Orders per second over the last few seconds; `None` until two samples a second apart.
    pub fn rate_now(&self) -> Option<f64> {
        let &(last_at, last) = self.samples.back()?;
        let cutoff = last_at.checked_sub(RATE_SPAN)?;
        let i = self.samples.partition_point(|&(at, _)| at <= cutoff);
        let &(first_at, first) = self
            .samples
            .get(i.saturating_sub(1))
            .filter(|_| i > 0)
            .or_else(|| self.samples.front())?;
        let span = last_at.duration_since(first_at).as_secs_f64();
        (span >= 1.0).then(|| (last - first) as f64 / span)
    }

    /// Orders/s in `buckets` equal slices of the last `window` before `now`, oldest first;
    /// `None` where no sample covers the slice.
    pub fn buckets(&self, now: Instant, window: Duration, buckets: usize) -> Vec<Option<f64>> {
        let (Some(&(first_at, _)), Some(&(last_at, _))) =
            (self.samples.front(), self.samples.back())
        else {
            return vec![None; buckets];
        };
        let width = window.as_secs_f64() / buckets.max(1) as f64;
        (0..buckets)
            .map(|i| {
                let back = |k: usize| {
                    now.checked_sub(Duration::from_secs_f64(width * (buckets - k) as f64))
                };
                let (start, end) = (back(i)?, back(i + 1)?);
                // Only what samples cover: nothing before the first, and no made-up zero
                // after the last (an outage is not a stop).
                if end <= first_at || start >= last_at {
                    return None;
                }
                let (start, end) = (start.max(first_at), end.min(last_at));
                if end <= start {
                    return None;
                }
                let delta = self.count_at(end)? - self.count_at(start)?;
                Some(delta as f64 / end.duration_since(start).as_secs_f64())
            })
            .collect()
    }
}

/// The newest orders seen, by arrival (the order the API lists them in), at most `cap`.
#[derive(Debug, Clone)]
pub struct OrderBook {
    orders: BTreeMap<Arrival, OrderDocument>,
    arrivals: HashMap<u64, Arrival>,
    cap: usize,
}

impl OrderBook {
    pub fn new(cap: usize) -> Self {
        OrderBook {
            orders: BTreeMap::new(),
            arrivals: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Adds or refreshes orders (a later fetch knows more: payment, fraud), dropping the
    /// oldest arrivals beyond the cap.
    pub fn merge(&mut self, docs: impl IntoIterator<Item = OrderDocument>) {
        for doc in docs {
            let arrival = doc.arrival();
            if let Some(old) = self.arrivals.insert(doc.order_id, arrival) {
                self.orders.remove(&old);
            }
            self.orders.insert(arrival, doc);
        }
        while self.orders.len() > self.cap {
            if let Some((oldest, _)) = self.orders.pop_first() {
                self.arrivals.remove(&oldest.order_id);
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<&OrderDocument> {
        self.arrivals.get(&id).and_then(|a| self.orders.get(a))
    }

    /// Where the held order `id` stands in arrival order.
    pub fn arrival(&self, id: u64) -> Option<Arrival> {
        self.arrivals.get(&id).copied()
    }

    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &OrderDocument> {
        self.orders.values().rev()
    }
}

/// Errors of single endpoints while the API as a whole answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PanelErrors {
    pub totals: Option<String>,
    pub orders: Option<String>,
    pub alerts: Option<String>,
    pub lag: Option<String>,
    pub dead_letters: Option<String>,
    pub canary: Option<String>,
}

impl PanelErrors {
    fn slot(&mut self, panel: Panel) -> &mut Option<String> {
        match panel {
            Panel::Totals => &mut self.totals,
            Panel::Orders => &mut self.orders,
            Panel::Alerts => &mut self.alerts,
            Panel::Lag => &mut self.lag,
            Panel::DeadLetters => &mut self.dead_letters,
            Panel::Canary => &mut self.canary,
        }
    }
}

/// The console's whole state.
#[derive(Debug, Clone)]
pub struct App {
    pub api_url: String,
    pub theme: Theme,
    /// The time drawing reads ages against; set by [`App::tick`], so tests fix it.
    pub now: Instant,
    pub size: Rect,
    pub connection: Connection,
    pub last_ok: Option<Instant>,
    pub totals: Option<Totals>,
    pub rate: RateHistory,
    /// Orders per minute from the store, oldest first (empty until the API answers).
    pub windows: Vec<MinuteWindow>,
    pub lag: Vec<GroupLag>,
    /// The canaries' journeys (`None` before the first answer, or from an API without them).
    pub canary: Option<CanaryStatus>,
    pub orders: OrderBook,
    pub alerts: Vec<Alert>,
    /// Dead letters not yet handled, the oldest first; fetched while their pane is focused.
    pub dead_letters: Option<Vec<DeadLetter>>,
    pub errors: PanelErrors,
    pub filter: Filter,
    pub input: Option<FilterInput>,
    /// Ids of the held orders the filter lets through, newest first.
    view: Vec<u64>,
    pub focus: Pane,
    pub orders_scroll: Scroll,
    pub alerts_scroll: Scroll,
    pub dead_letters_scroll: Scroll,
    /// Keep the newest order selected as orders arrive.
    pub follow: bool,
    pub paused: bool,
    /// Requests to retry now (`r`), passed to the fetcher through [`Control`].
    retries: u32,
    /// Bumped to fetch again at once (after a dead letter was acted on).
    refreshes: u32,
    pub overlay: Overlay,
    /// Confirmed and not yet taken by the screen loop.
    requested: Option<DeadLetterRequest>,
    /// The action being carried out, if any (one at a time).
    pub acting: Option<DeadLetterRequest>,
    pub notice: Option<Notice>,
    pub quit: bool,
}

impl App {
    pub fn new(api_url: impl Into<String>, theme: Theme, max_orders: usize, now: Instant) -> Self {
        App {
            api_url: api_url.into(),
            theme,
            now,
            size: Rect::new(0, 0, 80, 24),
            connection: Connection::Connecting,
            last_ok: None,
            totals: None,
            rate: RateHistory::default(),
            windows: Vec::new(),
            lag: Vec::new(),
            canary: None,
            orders: OrderBook::new(max_orders),
            alerts: Vec::new(),
            dead_letters: None,
            errors: PanelErrors::default(),
            filter: Filter::default(),
            input: None,
            view: Vec::new(),
            focus: Pane::Orders,
            orders_scroll: Scroll::default(),
            alerts_scroll: Scroll::default(),
            dead_letters_scroll: Scroll::default(),
            follow: true,
            paused: false,
            retries: 0,
            refreshes: 0,
            overlay: Overlay::None,
            requested: None,
            acting: None,
            notice: None,
            quit: false,
        }
    }

    /// What the fetch tasks should do now.
    /// The lag and rate shown are the last known, not live: the API does not answer.
    pub fn is_stale(&self) -> bool {
        matches!(
            self.connection,
            Connection::Disconnected { .. } | Connection::Unauthorised(_)
        )
    }

    /// While the API is unreachable, retries at once instead of waiting out the backoff.
    pub fn retry_now(&mut self) {
        if let Connection::Disconnected { retry_at, .. } = &mut self.connection {
            *retry_at = self.now;
            self.retries = self.retries.wrapping_add(1);
        }
    }

    pub fn control(&self) -> Control {
        Control {
            retry: self.retries.wrapping_add(self.refreshes),
            paused: self.paused,
            dead_letters: self.focus == Pane::DeadLetters,
            detail: match &self.overlay {
                Overlay::Detail(d) => Some(d.order_id),
                _ => None,
            },
        }
    }

    pub fn tick(&mut self, now: Instant) {
        self.now = now;
    }

    pub fn resize(&mut self, width: u16, height: u16) {
        self.size = Rect::new(0, 0, width, height);
        self.clamp_scrolls();
    }

    /// Whether a banner (API unreachable, credentials refused) takes a row.
    pub fn banner_shown(&self) -> bool {
        matches!(
            self.connection,
            Connection::Disconnected { .. } | Connection::Unauthorised(_)
        )
    }

    pub fn order_rows(&self) -> usize {
        layout::order_rows(self.size, self.banner_shown())
    }

    pub fn alert_rows(&self) -> usize {
        layout::alert_rows(self.size, self.banner_shown())
    }

    pub fn dead_letter_rows(&self) -> usize {
        layout::dead_letter_rows(self.size, self.banner_shown())
    }

    pub fn selected_dead_letter(&self) -> Option<&DeadLetter> {
        self.dead_letters
            .as_ref()?
            .get(self.dead_letters_scroll.selected)
    }

    /// Asks to confirm `kind` on the selected dead letter (or the one open), unless it is
    /// already handled or another action is under way.
    pub fn confirm_dead_letter_action(&mut self, kind: DeadLetterActionKind) {
        let letter = match &self.overlay {
            Overlay::DeadLetter { letter, .. } => Some(letter.as_ref().clone()),
            _ => self.selected_dead_letter().cloned(),
        };
        let Some(letter) = letter else {
            return;
        };
        if let Some(busy) = &self.acting {
            self.notify(
                format!("wait: {} of {} under way", busy.kind.verb(), busy.at),
                false,
            );
            return;
        }
        if let Some(h) = &letter.handled {
            self.notify(
                format!(
                    "{} is already {} (by {})",
                    letter.coordinates(),
                    h.action,
                    h.by
                ),
                false,
            );
            return;
        }
        self.overlay = Overlay::Confirm(DeadLetterRequest {
            kind,
            at: letter.coordinates(),
            to: letter.source.as_ref().map(|s| s.topic.clone()),
            reason: letter.reason.clone(),
            key: letter.key.clone(),
        });
    }

    /// The operator said yes: the request waits for the screen loop to take it.
    pub fn confirm(&mut self) {
        if let Overlay::Confirm(request) = std::mem::replace(&mut self.overlay, Overlay::None) {
            self.notify(format!("{} {}…", request.kind.doing(), request.at), true);
            self.acting = Some(request.clone());
            self.requested = Some(request);
        }
    }

    /// The confirmed action, once: the screen loop hands it to whoever carries it out.
    pub fn take_request(&mut self) -> Option<DeadLetterRequest> {
        self.requested.take()
    }

    pub fn notify(&mut self, text: String, ok: bool) {
        self.notice = Some(Notice {
            text,
            ok,
            at: self.now,
        });
    }

    /// The notice to show now, if one is recent.
    pub fn current_notice(&self) -> Option<&Notice> {
        self.notice
            .as_ref()
            .filter(|n| self.now.saturating_duration_since(n.at) < NOTICE_FOR)
    }

    /// Ids of the orders shown, newest first.
    pub fn view(&self) -> &[u64] {
        &self.view
    }

    /// The orders shown in rows `range` of the table.
    pub fn visible_orders(
        &self,
        offset: usize,
        rows: usize,
    ) -> impl Iterator<Item = &OrderDocument> {
        self.view
            .iter()
            .skip(offset)
            .take(rows)
            .filter_map(|id| self.orders.get(*id))
    }

    pub fn selected_order(&self) -> Option<u64> {
        self.view.get(self.orders_scroll.selected).copied()
    }

    pub fn selected_alert(&self) -> Option<&Alert> {
        self.alerts.get(self.alerts_scroll.selected)
    }

    /// Takes in one piece of news from the fetch task.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Connected(at) => {
                self.connection = Connection::Connected;
                self.last_ok = Some(at);
            }
            Update::Disconnected { error, retry_at } => {
                self.connection = Connection::Disconnected { error, retry_at };
                self.clamp_scrolls();
            }
            Update::Unauthorised(error) => {
                self.connection = Connection::Unauthorised(error);
                self.clamp_scrolls();
            }
            Update::Failed(panel, error) => *self.errors.slot(panel) = Some(error),
            Update::Totals(at, totals) => {
                self.errors.totals = None;
                self.rate.push(at, totals.order_count);
                self.totals = Some(totals);
            }
            Update::Orders(docs) => {
                self.errors.orders = None;
                self.merge_orders(docs);
            }
            Update::Alerts(alerts) => self.apply_alerts(alerts),
            Update::Lag(lag) => {
                self.errors.lag = None;
                self.lag = lag;
            }
            Update::DeadLetters(letters) => self.apply_dead_letters(letters),
            Update::Windows(windows) => self.windows = windows,
            Update::DeadLetterActed(result) => {
                self.acting = None;
                match result {
                    Ok(text) => self.notify(text, true),
                    Err(text) => self.notify(text, false),
                }
                self.refreshes = self.refreshes.wrapping_add(1);
            }
            Update::Canary(canary) => {
                self.errors.canary = None;
                self.canary = canary;
            }
            Update::Detail(id, result) => self.apply_detail(id, result),
        }
    }

    /// New alerts; a selection below the top stays on its alert.
    fn apply_alerts(&mut self, alerts: Vec<Alert>) {
        self.errors.alerts = None;
        let keep = self.selected_alert().map(|a| a.order_id);
        self.alerts = alerts;
        if let Some(id) = keep.filter(|_| self.alerts_scroll.selected > 0) {
            if let Some(i) = self.alerts.iter().position(|a| a.order_id == id) {
                let screen = self.alerts_scroll.selected - self.alerts_scroll.offset;
                self.alerts_scroll.selected = i;
                self.alerts_scroll.offset = i.saturating_sub(screen);
            }
        }
        let rows = self.alert_rows();
        self.alerts_scroll.clamp(self.alerts.len(), rows);
    }

    /// New dead letters; the selection stays on its dead letter.
    fn apply_dead_letters(&mut self, letters: Vec<DeadLetter>) {
        self.errors.dead_letters = None;
        let keep = self.selected_dead_letter().map(DeadLetter::coordinates);
        self.dead_letters = Some(letters);
        if let Some(at) = keep {
            if let Some(i) = self
                .dead_letters
                .iter()
                .flatten()
                .position(|d| d.coordinates() == at)
            {
                self.dead_letters_scroll.selected = i;
            }
        }
        self.clamp_scrolls();
    }

    /// An order's detail: merged into the table, and shown if its overlay is open.
    fn apply_detail(&mut self, id: u64, result: Result<Option<Box<OrderDetail>>, String>) {
        if let Ok(Some(detail)) = &result {
            if self.orders.get(id).is_some() {
                self.merge_orders([detail.order.clone()]);
            }
        }
        if let Overlay::Detail(view) = &mut self.overlay {
            if view.order_id == id {
                view.data = match result {
                    Ok(Some(detail)) => DetailData::Loaded(detail),
                    Ok(None) => DetailData::NotFound,
                    // Keep showing what was loaded when a refresh fails.
                    Err(e) => match &view.data {
                        DetailData::Loaded(_) => return,
                        _ => DetailData::Failed(e),
                    },
                };
            }
        }
    }

    fn merge_orders(&mut self, docs: impl IntoIterator<Item = OrderDocument>) {
        // Without follow, the selected order stays where it is on screen as rows arrive.
        let anchor = (!self.follow).then(|| {
            self.selected_order().map(|id| {
                (
                    id,
                    self.orders_scroll.selected
                        - self.orders_scroll.offset.min(self.orders_scroll.selected),
                )
            })
        });
        self.orders.merge(docs);
        self.rebuild_view();
        match anchor.flatten() {
            Some((id, screen_row)) => {
                // The view is sorted newest arrival first.
                let at = self.orders.arrival(id);
                let i = self.view.partition_point(|&v| self.orders.arrival(v) > at);
                self.orders_scroll.selected = i;
                self.orders_scroll.offset = i.saturating_sub(screen_row);
            }
            None if self.follow => self.orders_scroll.top(),
            None => {}
        }
        self.clamp_scrolls();
    }

    /// Recomputes the filtered view; called when orders or the filter change, never by draw.
    pub fn rebuild_view(&mut self) {
        self.view.clear();
        let filter = &self.filter;
        self.view.extend(
            self.orders
                .newest_first()
                .filter(|d| filter.matches(d))
                .map(|d| d.order_id),
        );
    }

    pub fn set_filter(&mut self, filter: Filter) {
        if filter != self.filter {
            self.filter = filter;
            self.rebuild_view();
            self.orders_scroll.top();
            self.clamp_scrolls();
        }
    }

    pub fn clamp_scrolls(&mut self) {
        let (orders, alerts) = (self.order_rows(), self.alert_rows());
        self.orders_scroll.clamp(self.view.len(), orders);
        self.alerts_scroll.clamp(self.alerts.len(), alerts);
        let dead = self.dead_letters.as_ref().map_or(0, Vec::len);
        self.dead_letters_scroll
            .clamp(dead, self.dead_letter_rows());
    }

    pub fn open_detail(&mut self, order_id: u64) {
        self.overlay = Overlay::Detail(DetailView {
            order_id,
            data: DetailData::Loading,
            scroll: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: u64) -> OrderDocument {
        OrderDocument {
            order_id: id,
            country: "US".into(),
            status: "CREATED".into(),
            ..OrderDocument::default()
        }
    }

    #[test]
    fn order_book_keeps_the_newest_up_to_its_cap() {
        let mut book = OrderBook::new(3);
        book.merge((1..=5).map(doc));
        let ids: Vec<u64> = book.newest_first().map(|d| d.order_id).collect();
        assert_eq!(ids, vec![5, 4, 3]);
        let mut paid = doc(4);
        paid.payment_status = Some("PAID".into());
        book.merge([paid]);
        assert_eq!(book.len(), 3);
        assert_eq!(book.get(4).unwrap().payment_status.as_deref(), Some("PAID"));
    }

    /// Another client's ids far above ours arrived first: ours, stored later, are newest.
    #[test]
    fn order_book_orders_by_arrival_not_by_id() {
        let at = |id: u64, s: i64| OrderDocument {
            processed_at: orders_core::Timestamp::from_micros(s * 1_000_000),
            ..doc(id)
        };
        let mut book = OrderBook::new(4);
        book.merge([
            at(7_000_001, 100),
            at(7_000_002, 100),
            at(10, 200),
            at(11, 300),
        ]);
        let ids: Vec<u64> = book.newest_first().map(|d| d.order_id).collect();
        assert_eq!(ids, vec![11, 10, 7_000_002, 7_000_001]);
        // A newer arrival evicts the oldest arrival, not the smallest id.
        book.merge([at(12, 400)]);
        let ids: Vec<u64> = book.newest_first().map(|d| d.order_id).collect();
        assert_eq!(ids, vec![12, 11, 10, 7_000_002]);
        // A refreshed order keeps its place and is held once.
        let mut paid = at(10, 200);
        paid.payment_status = Some("PAID".into());
        book.merge([paid]);
        assert_eq!(book.len(), 4);
        assert_eq!(
            book.get(10).unwrap().payment_status.as_deref(),
            Some("PAID")
        );

        let mut state = App::new("http://x", Theme::mono(), 4, Instant::now());
        state.follow = false;
        state.merge_orders([at(7_000_001, 100), at(10, 200)]);
        state.orders_scroll.selected = 1;
        state.merge_orders([at(11, 300)]);
        assert_eq!(
            state.selected_order(),
            Some(7_000_001),
            "selection stays put"
        );
    }

    #[test]
    fn rate_from_successive_counts() {
        let t0 = Instant::now();
        let mut r = RateHistory::default();
        assert_eq!(r.rate_now(), None);
        for s in 0..=10u64 {
            r.push(t0 + Duration::from_secs(s), s * 20);
        }
        let rate = r.rate_now().unwrap();
        assert!((rate - 20.0).abs() < 1e-9, "{rate}");
        let b = r.buckets(t0 + Duration::from_secs(10), Duration::from_secs(20), 4);
        assert_eq!(b.len(), 4);
        assert_eq!(b[0], None);
        assert_eq!(b[1], None, "ends where the first sample is");
        assert!((b[2].unwrap() - 20.0).abs() < 1e-9, "{b:?}");
        assert!((b[3].unwrap() - 20.0).abs() < 1e-9, "{b:?}");
        // A store reset starts the history again rather than showing a negative rate.
        r.push(t0 + Duration::from_secs(11), 5);
        assert_eq!(r.rate_now(), None);
    }

    #[test]
    fn new_orders_keep_the_selection_in_place_without_follow() {
        let t0 = Instant::now();
        let mut app = App::new("http://x", Theme::mono(), 100, t0);
        app.apply(Update::Orders((1..=20).map(doc).collect()));
        assert_eq!(app.selected_order(), Some(20));
        app.follow = false;
        app.orders_scroll
            .move_by(2, app.view().len(), app.order_rows());
        assert_eq!(app.selected_order(), Some(18));
        app.apply(Update::Orders((21..=25).map(doc).collect()));
        assert_eq!(app.selected_order(), Some(18));
        app.follow = true;
        app.apply(Update::Orders(vec![doc(26)]));
        assert_eq!(app.selected_order(), Some(26));
    }
}
