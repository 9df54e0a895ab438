//! Styles of the console, with and without colour.
//!
//! Colour only ever repeats what a word or a marker already says, so the screen reads the
//! same with `NO_COLOR` set or on a monochrome terminal; without colour, emphasis is carried
//! by bold and reverse video.

use super::api::LagStatus;
use ratatui::style::{Color, Modifier, Style};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
    pub fn from_env() -> Theme {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    pub const fn mono() -> Theme {
        Theme { color: false }
    }

    fn fg(self, style: Style, color: Color) -> Style {
        if self.color {
            style.fg(color)
        } else {
            style
        }
    }

    pub fn title(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn border(self, focused: bool) -> Style {
        if focused {
            self.fg(Style::new().add_modifier(Modifier::BOLD), Color::Cyan)
        } else {
            self.fg(Style::new(), Color::DarkGray)
        }
    }

    pub fn label(self) -> Style {
        self.fg(Style::new(), Color::Gray)
    }

    pub fn dim(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }

    pub fn value(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn header(self) -> Style {
        self.fg(
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            Color::Gray,
        )
    }

    /// A flagged order or an alert: bold everywhere, red where there is colour.
    pub fn fraud(self) -> Style {
        self.fg(Style::new().add_modifier(Modifier::BOLD), Color::LightRed)
    }

    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    pub fn good(self) -> Style {
        self.fg(Style::new(), Color::Green)
    }

    pub fn warn(self) -> Style {
        self.fg(Style::new().add_modifier(Modifier::BOLD), Color::Yellow)
    }

    pub fn bad(self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::LightRed)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }

    pub fn lag_status(self, status: LagStatus) -> Style {
        match status {
            LagStatus::Ok => self.good(),
            LagStatus::Warn => self.warn(),
            LagStatus::Stall | LagStatus::Stop => self.bad(),
            LagStatus::Unknown => self.dim(),
        }
    }

    pub fn payment(self, status: Option<&str>) -> Style {
        match status {
            Some(s) if s.eq_ignore_ascii_case("PAID") => self.good(),
            Some(s) if s.eq_ignore_ascii_case("FAILED") => self.warn(),
            _ => self.dim(),
        }
    }

    /// The banner shown while the API is away.
    pub fn banner(self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }

    pub fn sparkline(self) -> Style {
        self.fg(Style::new(), Color::Cyan)
    }

    pub fn key(self) -> Style {
        self.fg(Style::new().add_modifier(Modifier::BOLD), Color::Cyan)
    }
}
