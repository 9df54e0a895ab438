//! What each key does: the console's update function, over [`App`] alone (no terminal).

use super::filter::Filter;
use super::state::{App, DeadLetterActionKind, FilterInput, Overlay, Pane};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// One line per key, for the help overlay.
pub const HELP: &[(&str, &str)] = &[
    ("q  Ctrl-C", "quit"),
    ("?  Esc", "this help; Esc closes overlays, then the filter"),
    ("Tab", "next pane (orders, alerts, dead letters)"),
    ("j k  ↓ ↑", "move the selection"),
    ("PgDn PgUp ^D ^U", "a page, half a page"),
    ("g G  Home End", "newest, oldest"),
    ("f  p  r", "follow newest on/off, pause updates, retry now"),
    ("/", "filter orders (Enter applies, Esc cancels)"),
    (
        "Enter",
        "detail of the selected order, alert or dead letter",
    ),
    ("R  D", "dead letters: redrive, discard the selected (asks)"),
];

/// The filter grammar, for the help overlay.
pub const FILTER_HELP: &[(&str, &str)] = &[
    ("#123  123", "that order id"),
    ("DE", "a country"),
    ("CANCELLED", "a status (also CREATED, CONFIRMED)"),
    ("fraud  !", "flagged orders only"),
    ("paid failed unpaid", "payment result"),
    ("DE FR fraud", "DE or FR, and flagged"),
];

fn ctrl(key: &KeyEvent, c: char) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)
}

impl App {
    /// Applies one key press.
    pub fn on_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        if ctrl(&key, 'c') {
            self.quit = true;
            return;
        }
        if self.input.is_some() {
            self.on_filter_key(key);
            return;
        }
        match &mut self.overlay {
            Overlay::Help => match key.code {
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Enter => {
                    self.overlay = Overlay::None;
                }
                KeyCode::Char('q') => self.quit = true,
                _ => {}
            },
            Overlay::Detail(view) => match key.code {
                KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => {
                    self.overlay = Overlay::None;
                }
                KeyCode::Char('q') => self.quit = true,
                KeyCode::Char('j') | KeyCode::Down => view.scroll = view.scroll.saturating_add(1),
                KeyCode::Char('k') | KeyCode::Up => view.scroll = view.scroll.saturating_sub(1),
                KeyCode::Char('g') | KeyCode::Home => view.scroll = 0,
                KeyCode::Char('?') => self.overlay = Overlay::Help,
                _ => {}
            },
            Overlay::DeadLetter { scroll, .. } => match key.code {
                KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => {
                    self.overlay = Overlay::None;
                }
                KeyCode::Char('q') => self.quit = true,
                KeyCode::Char('j') | KeyCode::Down => *scroll = scroll.saturating_add(1),
                KeyCode::Char('k') | KeyCode::Up => *scroll = scroll.saturating_sub(1),
                KeyCode::Char('g') | KeyCode::Home => *scroll = 0,
                KeyCode::Char('R') => {
                    self.confirm_dead_letter_action(DeadLetterActionKind::Redrive)
                }
                KeyCode::Char('D') => {
                    self.confirm_dead_letter_action(DeadLetterActionKind::Discard)
                }
                _ => {}
            },
            // Only y goes ahead; anything else is a no.
            Overlay::Confirm(_) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => self.confirm(),
                _ => self.overlay = Overlay::None,
            },
            Overlay::None => self.on_main_key(key),
        }
    }

    fn on_main_key(&mut self, key: KeyEvent) {
        let rows = match self.focus {
            Pane::Orders => self.order_rows(),
            Pane::Alerts => self.alert_rows(),
            Pane::DeadLetters => self.dead_letter_rows(),
        };
        let page = rows as isize;
        let half = (page / 2).max(1);
        match key.code {
            KeyCode::Char('d') if ctrl(&key, 'd') => self.move_selection(half),
            KeyCode::Char('u') if ctrl(&key, 'u') => self.move_selection(-half),
            KeyCode::Char('f') if ctrl(&key, 'f') => self.move_selection(page),
            KeyCode::Char('b') if ctrl(&key, 'b') => self.move_selection(-page),
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.overlay = Overlay::Help,
            KeyCode::Tab => self.focus = self.focus.next(),
            KeyCode::BackTab => self.focus = self.focus.previous(),
            KeyCode::Char('R') if self.focus == Pane::DeadLetters => {
                self.confirm_dead_letter_action(DeadLetterActionKind::Redrive)
            }
            KeyCode::Char('D') if self.focus == Pane::DeadLetters => {
                self.confirm_dead_letter_action(DeadLetterActionKind::Discard)
            }
            KeyCode::Char('j') | KeyCode::Down => self.move_selection(1),
            KeyCode::Char('k') | KeyCode::Up => self.move_selection(-1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.move_selection(page),
            KeyCode::PageUp => self.move_selection(-page),
            KeyCode::Char('g') | KeyCode::Home => match self.focus {
                Pane::Orders => self.orders_scroll.top(),
                Pane::Alerts => self.alerts_scroll.top(),
                Pane::DeadLetters => self.dead_letters_scroll.top(),
            },
            KeyCode::Char('G') | KeyCode::End => match self.focus {
                Pane::Orders => {
                    self.follow = false;
                    self.orders_scroll.bottom(self.view().len(), rows);
                }
                Pane::Alerts => self.alerts_scroll.bottom(self.alerts.len(), rows),
                Pane::DeadLetters => {
                    let len = self.dead_letters.as_ref().map_or(0, Vec::len);
                    self.dead_letters_scroll.bottom(len, rows)
                }
            },
            KeyCode::Char('f') => {
                self.follow = !self.follow;
                if self.follow {
                    self.orders_scroll.top();
                }
            }
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Char('r') => self.retry_now(),
            KeyCode::Char('/') => {
                self.input = Some(FilterInput {
                    text: self.filter.text().to_owned(),
                    error: None,
                    previous: self.filter.clone(),
                });
            }
            KeyCode::Enter => {
                let id = match self.focus {
                    Pane::Orders => self.selected_order(),
                    Pane::Alerts => self.selected_alert().map(|a| a.order_id),
                    Pane::DeadLetters => {
                        if let Some(letter) = self.selected_dead_letter() {
                            self.overlay = Overlay::DeadLetter {
                                letter: Box::new(letter.clone()),
                                scroll: 0,
                            };
                        }
                        None
                    }
                };
                if let Some(id) = id {
                    self.open_detail(id);
                }
            }
            KeyCode::Esc => self.set_filter(Filter::default()),
            _ => {}
        }
    }

    /// Moves the selection of the focused pane; leaving the newest order stops following.
    fn move_selection(&mut self, delta: isize) {
        match self.focus {
            Pane::Orders => {
                let (len, rows) = (self.view().len(), self.order_rows());
                self.orders_scroll.move_by(delta, len, rows);
                if self.orders_scroll.selected > 0 {
                    self.follow = false;
                }
            }
            Pane::Alerts => {
                let (len, rows) = (self.alerts.len(), self.alert_rows());
                self.alerts_scroll.move_by(delta, len, rows);
            }
            Pane::DeadLetters => {
                let len = self.dead_letters.as_ref().map_or(0, Vec::len);
                let rows = self.dead_letter_rows();
                self.dead_letters_scroll.move_by(delta, len, rows);
            }
        }
    }

    /// Pasted text goes into the filter being typed, and nowhere else.
    pub fn on_paste(&mut self, text: &str) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        input
            .text
            .extend(text.chars().filter(|c| !c.is_control()).take(64));
        match Filter::parse(&input.text) {
            Ok(filter) => {
                input.error = None;
                self.set_filter(filter);
            }
            Err(e) => input.error = Some(e),
        }
    }

    fn on_filter_key(&mut self, key: KeyEvent) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        match key.code {
            KeyCode::Esc => {
                let previous = input.previous.clone();
                self.input = None;
                self.set_filter(previous);
                return;
            }
            KeyCode::Enter => {
                match Filter::parse(&input.text) {
                    Ok(filter) => {
                        let lookup = filter.single_id();
                        self.input = None;
                        self.set_filter(filter);
                        // An id not among the held orders: ask the API for it directly.
                        if let Some(id) = lookup.filter(|_| self.view().is_empty()) {
                            self.open_detail(id);
                        }
                    }
                    Err(e) => input.error = Some(e),
                }
                return;
            }
            KeyCode::Backspace => {
                input.text.pop();
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                input.text.clear();
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                if input.text.chars().count() < 64 {
                    input.text.push(c);
                }
            }
            _ => return,
        }
        // Narrow as the operator types, whenever what is typed so far makes sense.
        match Filter::parse(&input.text) {
            Ok(filter) => {
                input.error = None;
                self.set_filter(filter);
            }
            Err(e) => input.error = Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{Alert, OrderDocument};
    use super::super::fetch::Update;
    use super::super::state::{DetailData, Overlay};
    use super::super::theme::Theme;
    use super::*;
    use std::time::Instant;

    fn press(app: &mut App, keys: &str) {
        for c in keys.chars() {
            app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
    }

    fn key(app: &mut App, code: KeyCode) {
        app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn app_with_orders(n: u64) -> App {
        let mut app = App::new("http://api", Theme::mono(), 10_000, Instant::now());
        app.resize(80, 24);
        app.apply(Update::Orders(
            (1..=n)
                .map(|id| OrderDocument {
                    order_id: id,
                    country: ["US", "DE", "FR"][(id % 3) as usize].into(),
                    status: if id % 5 == 0 { "CANCELLED" } else { "CREATED" }.into(),
                    fraud: id % 7 == 0,
                    ..OrderDocument::default()
                })
                .collect(),
        ));
        app
    }

    #[test]
    fn q_quits_and_ctrl_c_too() {
        let mut app = app_with_orders(3);
        press(&mut app, "q");
        assert!(app.quit);
        let mut app = app_with_orders(3);
        app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(app.quit);
    }

    #[test]
    fn j_k_g_scroll_and_leaving_the_top_stops_following() {
        let mut app = app_with_orders(100);
        assert!(app.follow);
        assert_eq!(app.selected_order(), Some(100));
        press(&mut app, "jjj");
        assert_eq!(app.selected_order(), Some(97));
        assert!(!app.follow);
        key(&mut app, KeyCode::Up);
        assert_eq!(app.selected_order(), Some(98));
        press(&mut app, "G");
        assert_eq!(app.selected_order(), Some(1));
        let rows = app.order_rows();
        assert_eq!(app.orders_scroll.offset, 100 - rows);
        press(&mut app, "g");
        assert_eq!(app.selected_order(), Some(100));
        assert_eq!(app.orders_scroll.offset, 0);
        press(&mut app, "kkk");
        assert_eq!(app.selected_order(), Some(100), "k stops at the newest");
    }

    #[test]
    fn page_keys_move_by_the_visible_rows() {
        let mut app = app_with_orders(100);
        let rows = app.order_rows();
        key(&mut app, KeyCode::PageDown);
        assert_eq!(app.orders_scroll.selected, rows);
        app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        assert_eq!(app.orders_scroll.selected, rows - rows / 2);
    }

    #[test]
    fn f_toggles_follow_and_jumps_to_the_newest() {
        let mut app = app_with_orders(50);
        press(&mut app, "jjj");
        assert!(!app.follow);
        press(&mut app, "f");
        assert!(app.follow);
        assert_eq!(app.selected_order(), Some(50));
        press(&mut app, "f");
        assert!(!app.follow);
    }

    #[test]
    fn p_pauses_and_the_fetcher_is_told() {
        let mut app = app_with_orders(1);
        assert!(!app.control().paused);
        press(&mut app, "p");
        assert!(app.paused && app.control().paused);
        press(&mut app, "p");
        assert!(!app.paused);
    }

    #[test]
    fn tab_moves_between_panes_and_enter_opens_the_alerts_order() {
        let mut app = app_with_orders(10);
        app.apply(Update::Alerts(vec![
            Alert {
                order_id: 7,
                reason: "R".into(),
                ..Alert::default()
            },
            Alert {
                order_id: 3,
                reason: "R".into(),
                ..Alert::default()
            },
        ]));
        key(&mut app, KeyCode::Tab);
        assert_eq!(app.focus, Pane::Alerts);
        press(&mut app, "j");
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.control().detail, Some(3));
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::BackTab);
        assert_eq!(app.focus, Pane::Orders);
    }

    #[test]
    fn slash_filters_as_you_type_and_esc_restores() {
        let mut app = app_with_orders(30);
        press(&mut app, "/de");
        assert!(app.input.is_some());
        assert_eq!(app.view().len(), 10, "ids 1,4,7,…,28 are DE");
        key(&mut app, KeyCode::Enter);
        assert!(app.input.is_none());
        assert_eq!(app.filter.text(), "de");
        press(&mut app, "/ fraud");
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.view(), &[28, 7]);
        // Esc while typing goes back to the filter before the `/`.
        press(&mut app, "/");
        key(&mut app, KeyCode::Backspace);
        key(&mut app, KeyCode::Backspace);
        key(&mut app, KeyCode::Backspace);
        key(&mut app, KeyCode::Backspace);
        key(&mut app, KeyCode::Backspace);
        key(&mut app, KeyCode::Backspace);
        assert_eq!(app.view().len(), 10);
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.view(), &[28, 7]);
        // Esc on the main screen clears the filter.
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.view().len(), 30);
    }

    #[test]
    fn a_bad_filter_word_is_reported_and_not_applied() {
        let mut app = app_with_orders(30);
        press(&mut app, "/CANCELLED");
        assert_eq!(app.view().len(), 6);
        press(&mut app, " ?bad");
        let input = app.input.as_ref().unwrap();
        assert_eq!(input.error.as_ref().unwrap().0, "?bad");
        assert_eq!(app.view().len(), 6, "the last good filter stays");
        key(&mut app, KeyCode::Enter);
        assert!(app.input.is_some(), "Enter does not accept a bad filter");
    }

    #[test]
    fn filter_on_an_id_not_held_asks_the_api() {
        let mut app = app_with_orders(10);
        press(&mut app, "/#5");
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.view(), &[5]);
        assert_eq!(app.overlay, Overlay::None);
        key(&mut app, KeyCode::Esc);
        press(&mut app, "/#12345");
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.control().detail, Some(12345));
    }

    #[test]
    fn keys_typed_into_the_filter_are_not_commands() {
        let mut app = app_with_orders(10);
        press(&mut app, "/q");
        assert!(!app.quit);
        assert_eq!(app.input.as_ref().unwrap().text, "q");
    }

    #[test]
    fn enter_opens_the_detail_and_esc_closes_it() {
        let mut app = app_with_orders(10);
        press(&mut app, "jj");
        key(&mut app, KeyCode::Enter);
        match &app.overlay {
            Overlay::Detail(d) => {
                assert_eq!(d.order_id, 8);
                assert_eq!(d.data, DetailData::Loading);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(app.control().detail, Some(8));
        // Keys scroll the detail, not the table behind it.
        press(&mut app, "j");
        assert_eq!(app.selected_order(), Some(8));
        app.apply(Update::Detail(8, Ok(None)));
        assert!(matches!(&app.overlay, Overlay::Detail(d) if d.data == DetailData::NotFound));
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.overlay, Overlay::None);
        assert_eq!(app.control().detail, None);
    }

    #[test]
    fn help_opens_with_question_mark_and_closes_with_esc() {
        let mut app = app_with_orders(1);
        press(&mut app, "?");
        assert_eq!(app.overlay, Overlay::Help);
        press(&mut app, "j");
        assert_eq!(app.overlay, Overlay::Help);
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.overlay, Overlay::None);
        press(&mut app, "??");
        assert_eq!(app.overlay, Overlay::None);
    }

    #[test]
    fn detail_answers_for_another_order_are_ignored() {
        let mut app = app_with_orders(3);
        app.open_detail(2);
        app.apply(Update::Detail(3, Ok(None)));
        assert!(matches!(&app.overlay, Overlay::Detail(d) if d.data == DetailData::Loading));
    }
}
