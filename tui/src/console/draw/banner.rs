//! The banner over the panes while the API does not answer or refuses the token.

use crate::console::state::{App, Connection};
use crate::console::text;
use ratatui::layout::Rect;
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::time::Duration;

/// Draws the banner: why the data below is not current, and what happens next.
pub(super) fn draw(f: &mut Frame, app: &App, area: Rect) {
    if let Connection::Unauthorised(error) = &app.connection {
        let msg = format!(" NOT AUTHORISED: set ORDERS_API_TOKEN (or --token) · {error}");
        f.render_widget(Paragraph::new(msg).style(app.theme.banner()), area);
        return;
    }
    let Connection::Disconnected { error, retry_at } = &app.connection else {
        return;
    };
    let retry = match retry_at.checked_duration_since(app.now) {
        Some(d) if !d.is_zero() => {
            format!("retrying in {}", text::age(d + Duration::from_millis(999)))
        }
        _ => "retrying now".to_owned(),
    };
    // The retry first and the cause after, as a narrow screen cuts the end; the age of
    // the data on screen is in the status line.
    let msg = format!(" API UNREACHABLE · {retry} · r retry now · {error}");
    f.render_widget(Paragraph::new(msg).style(app.theme.banner()), area);
}
