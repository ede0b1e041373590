//! `smbwatch top`: the iftop of SMB. Polls a running daemon's `/top`
//! document (see [`crate::metrics::top`]) and draws top sources by distinct
//! destinations with a new-pairs rate sparkline each, the latest alerts,
//! and the counters with their rates.
//!
//! It talks to the metrics endpoint rather than reading the pinned maps
//! itself: it then needs no privileges, can run on another host, and sees
//! the alerts, which only the daemon knows.

mod fetch;
mod state;
mod view;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

pub use fetch::{fetch_top, FetchError};
pub use state::{sparkline, TopState};

/// `smbwatch top` options.
#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// The daemon's metrics address (`smbwatch run --metrics ADDR`).
    #[arg(long, value_name = "ADDR", default_value_t = crate::metrics::DEFAULT_LISTEN)]
    pub connect: SocketAddr,
    /// How often to poll (e.g. 1s, 500ms).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

/// Runs the view until `q`, Esc or Ctrl-C; the terminal is restored on
/// every way out (ratatui's panic hook covers panics).
pub fn run(args: &TopArgs) -> std::io::Result<()> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(std::io::Error::other(format!(
            "top draws in a terminal, and stdin or stdout is not one; without a terminal read http://{}/top (JSON) or run `smbwatch status`",
            args.connect
        )));
    }
    let mut terminal = ratatui::try_init()?;
    let result = (|| {
        let mut state = TopState::default();
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                next = Instant::now() + args.interval;
                match fetch_top(args.connect) {
                    Ok(doc) => state.update(doc),
                    Err(e) => state.error = Some(e.to_string()),
                }
            }
            terminal.draw(|f| view::draw(f, &state, args.connect))?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait.min(Duration::from_millis(250)))? {
                if let Event::Key(k) = event::read()? {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if k.kind == KeyEventKind::Press
                        && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                    {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}
