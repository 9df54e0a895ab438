//! Taking the terminal over and giving it back: raw mode and the alternate screen, undone on
//! every way out — a normal return, an error, a signal (the loop returns) and a panic (hook).

use anyhow::Context;
use crossterm::cursor::Show;
use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{stdout, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

pub type ConsoleTerminal = Terminal<CrosstermBackend<Stdout>>;

/// Owns the terminal while the console runs; dropping it restores the terminal.
pub struct TerminalGuard {
    pub terminal: ConsoleTerminal,
}

/// Whether this process holds the terminal (raw mode, alternate screen).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back as the shell expects it, once: a second "leave the alternate
/// screen" (the panic hook, then the guard dropped while unwinding) would move the cursor
/// back to where it was on entry and overwrite the panic message.
pub fn restore() {
    if TAKEN.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = crossterm::execute!(stdout(), DisableBracketedPaste, LeaveAlternateScreen, Show);
    }
}

/// Restores the terminal before the default panic message, so the message is readable and
/// the shell is usable after a crash.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

impl TerminalGuard {
    pub fn enter() -> anyhow::Result<Self> {
        install_panic_hook();
        enable_raw_mode().context("the console needs an interactive terminal")?;
        TAKEN.store(true, Ordering::SeqCst);
        let setup = crossterm::execute!(stdout(), EnterAlternateScreen, EnableBracketedPaste)
            .map_err(anyhow::Error::from)
            .and_then(|()| Terminal::new(CrosstermBackend::new(stdout())).map_err(Into::into));
        match setup {
            Ok(mut terminal) => {
                let _ = terminal.hide_cursor();
                let _ = terminal.clear();
                Ok(TerminalGuard { terminal })
            }
            Err(e) => {
                restore();
                Err(e.context("setting up the terminal"))
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}
