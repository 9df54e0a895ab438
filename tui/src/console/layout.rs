//! Where each pane goes for a terminal size: one function, used by the drawing and by the
//! key handling (which must know how many rows a page has).

use ratatui::layout::{Constraint, Layout, Rect};

/// Below this the console only says the terminal is too small.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// The rectangles of the main screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub banner: Option<Rect>,
    pub totals: Rect,
    /// The orders/s history gets a pane of its own on wide screens; on narrow ones it is a
    /// line inside the totals.
    pub rate: Option<Rect>,
    pub lag: Rect,
    pub orders: Rect,
    pub alerts: Rect,
    pub status: Rect,
}

/// Whether the screen is big enough for the wide arrangement (side-by-side tables, partitions).
pub fn is_wide(area: Rect) -> bool {
    area.width >= 120 && area.height >= 36
}

pub fn too_small(area: Rect) -> bool {
    area.width < MIN_WIDTH || area.height < MIN_HEIGHT
}

pub fn areas(area: Rect, banner: bool) -> Areas {
    let wide = is_wide(area);
    let top_height = if wide { 9 } else { 6 };
    let [banner_area, top, main, status] = Layout::vertical([
        Constraint::Length(u16::from(banner)),
        Constraint::Length(top_height),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let banner = banner.then_some(banner_area);
    if wide {
        let [totals, rate, lag] = Layout::horizontal([
            Constraint::Length(62),
            Constraint::Fill(1),
            Constraint::Length(64),
        ])
        .areas(top);
        let [orders, alerts] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(58)]).areas(main);
        Areas {
            banner,
            totals,
            rate: Some(rate),
            lag,
            orders,
            alerts,
            status,
        }
    } else {
        let [totals, lag] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
        // A third of what is left for alerts, at least a border and three lines.
        let alerts_height = (main.height / 3).max(5);
        let [orders, alerts] =
            Layout::vertical([Constraint::Fill(1), Constraint::Length(alerts_height)]).areas(main);
        Areas {
            banner,
            totals,
            rate: None,
            lag,
            orders,
            alerts,
            status,
        }
    }
}

/// Rows of orders visible at once (the table has a border and a header row).
pub fn order_rows(area: Rect, banner: bool) -> usize {
    usize::from(areas(area, banner).orders.height.saturating_sub(3)).max(1)
}

/// Alerts visible at once (the list has a border).
pub fn alert_rows(area: Rect, banner: bool) -> usize {
    usize::from(areas(area, banner).alerts.height.saturating_sub(2)).max(1)
}

/// Dead letters visible at once: their pane takes the orders' and alerts' place (a border
/// and a header row).
pub fn dead_letter_rows(area: Rect, banner: bool) -> usize {
    let a = areas(area, banner);
    usize::from(a.orders.union(a.alerts).height.saturating_sub(3)).max(1)
}

/// The rectangle of a centred overlay.
pub fn overlay(area: Rect, max_width: u16, max_height: u16) -> Rect {
    let width = max_width
        .min(area.width.saturating_sub(4))
        .max(area.width.min(20));
    let height = max_height
        .min(area.height.saturating_sub(2))
        .max(area.height.min(5));
    Rect {
        x: area.x + (area.width.saturating_sub(width)) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_screen_stacks_everything() {
        let a = areas(Rect::new(0, 0, 80, 24), false);
        assert_eq!(a.rate, None);
        assert_eq!(a.status, Rect::new(0, 23, 80, 1));
        assert_eq!(a.totals.height, 6);
        assert_eq!(a.orders.width, 80);
        assert_eq!(a.orders.height + a.alerts.height, 17);
        assert!(order_rows(Rect::new(0, 0, 80, 24), false) >= 8);
        assert_eq!(
            order_rows(Rect::new(0, 0, 80, 24), true) + 1,
            order_rows(Rect::new(0, 0, 80, 24), false)
        );
    }

    #[test]
    fn wide_screen_puts_alerts_beside_orders() {
        let a = areas(Rect::new(0, 0, 160, 48), false);
        assert!(a.rate.is_some());
        assert_eq!(a.orders.y, a.alerts.y);
        assert_eq!(a.orders.width + a.alerts.width, 160);
        assert_eq!(order_rows(Rect::new(0, 0, 160, 48), false), 35);
    }
}
