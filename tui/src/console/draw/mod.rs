//! Drawing the console from [`App`]: free functions that only read the state, one module
//! per pane and overlay, the pieces they share in `parts`.
//!
//! Only the rows on screen are built, so a frame costs the same with 100 or 100,000 orders
//! held.

mod alerts;
mod banner;
mod confirm;
mod dead_letter;
mod dead_letters;
mod detail;
mod help;
mod lag;
mod orders;
mod parts;
mod rate;
mod status;
mod totals;

use super::layout;
use super::state::{App, Overlay, Pane};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

/// Draws the whole screen.
pub fn render(f: &mut Frame, app: &App) {
    let area = f.area();
    if layout::too_small(area) {
        let msg = format!(
            "Terminal too small: {}×{}, the console needs {}×{}. q quits.",
            area.width,
            area.height,
            layout::MIN_WIDTH,
            layout::MIN_HEIGHT
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let areas = layout::areas(area, app.banner_shown());
    let wide = layout::is_wide(area);
    if let Some(banner) = areas.banner {
        banner::draw(f, app, banner);
    }
    totals::draw(f, app, &areas, wide);
    if let Some(rate) = areas.rate {
        rate::draw(f, app, rate);
    }
    lag::draw(f, app, areas.lag, wide);
    if app.focus == Pane::DeadLetters {
        dead_letters::draw(f, app, areas.orders.union(areas.alerts));
    } else {
        orders::draw(f, app, areas.orders, wide);
        alerts::draw(f, app, areas.alerts);
    }
    status::draw(f, app, areas.status);
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => help::draw(f, app.theme, area),
        Overlay::Detail(view) => detail::draw(f, app, view, area),
        Overlay::DeadLetter { letter, scroll } => dead_letter::draw(f, app, letter, *scroll, area),
        Overlay::Confirm(request) => confirm::draw(f, app.theme, request, area),
    }
}
