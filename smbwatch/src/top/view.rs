//! Drawing one frame of `smbwatch top`.

use std::net::SocketAddr;

use ratatui::{
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Row, Sparkline, Table},
    Frame,
};

use super::state::{sparkline, TopState};

/// Counters shown, in order, with their labels.
const COUNTERS: [(&str, &str); 8] = [
    ("packets", "packets"),
    ("monitored_syns", "monitored SYNs"),
    ("new_pairs", "new pairs"),
    ("responses", "answers"),
    ("events_consumed", "events consumed"),
    ("events_shed", "events shed"),
    ("ringbuf_full", "ring buffer full"),
    ("alerts", "alerts"),
];

/// Width of the per-source sparkline column.
const SPARK: usize = 30;

/// Terminal width from which the counters sit beside the sources.
const WIDE: u16 = 120;

/// Width of the source column: the longest address listed, at least the
/// header's.
fn source_width(s: &TopState) -> u16 {
    s.doc
        .sources
        .iter()
        .map(|src| src.source.to_string().len())
        .max()
        .unwrap_or(0)
        .max("SOURCE".len()) as u16
}

/// Draws the whole view.
pub fn draw(f: &mut Frame, s: &TopState, addr: SocketAddr) {
    let [title, body, alerts] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(8),
        Constraint::Length(10),
    ])
    .areas(f.area());
    let counters_height = COUNTERS.len() as u16 + 3;
    // Side by side on a wide terminal; on a narrow one (80 columns) the
    // counters go below, so the sources table keeps whole addresses.
    let (sources, counters, total) = if body.width >= WIDE {
        let [sources, side] =
            Layout::horizontal([Constraint::Min(60), Constraint::Length(40)]).areas(body);
        let [counters, total] =
            Layout::vertical([Constraint::Length(counters_height), Constraint::Min(3)]).areas(side);
        (sources, counters, total)
    } else {
        let [sources, side] =
            Layout::vertical([Constraint::Min(5), Constraint::Length(counters_height)]).areas(body);
        let [counters, total] =
            Layout::horizontal([Constraint::Length(40), Constraint::Min(10)]).areas(side);
        (sources, counters, total)
    };

    let updated = s
        .doc
        .ts
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into());
    let status = match &s.error {
        Some(e) => format!("error: {e}"),
        None => format!(
            "tracked sources {}  updated {updated}",
            s.doc.tracked_sources
        ),
    };
    f.render_widget(
        Paragraph::new(Line::from(format!(
            "smbwatch top  {addr}  {status}  (q quits)"
        )))
        .style(Style::new().add_modifier(Modifier::REVERSED)),
        title,
    );

    let rows = s.doc.sources.iter().map(|src| {
        let hist = s.source_rates.get(&src.source);
        let rate = hist.and_then(|h| h.back()).copied().unwrap_or(0.0);
        Row::new(vec![
            src.source.to_string(),
            src.distinct_destinations.to_string(),
            src.new_pairs.to_string(),
            format!("{rate:.1}"),
            hist.map(|h| sparkline(h, SPARK)).unwrap_or_default(),
        ])
    });
    f.render_widget(
        Table::new(
            rows,
            [
                // As wide as the longest address listed: never cut.
                Constraint::Length(source_width(s)),
                Constraint::Length(6),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new(["SOURCE", "DESTS", "NEW PAIRS", "PAIRS/s", "RATE"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(
            Block::new()
                .borders(Borders::ALL)
                .title(" top sources by distinct destinations "),
        ),
        sources,
    );

    let rows = COUNTERS.iter().map(|(key, label)| {
        let v = s.doc.counters.get(*key).copied().unwrap_or(0);
        let r = s.rates.get(*key).copied().unwrap_or(0.0);
        Row::new(vec![label.to_string(), v.to_string(), format!("{r:.1}/s")])
    });
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(17),
                Constraint::Length(10),
                Constraint::Length(10),
            ],
        )
        .header(
            Row::new(["COUNTER", "TOTAL", "RATE"]).style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::ALL).title(" counters ")),
        counters,
    );

    let data: Vec<u64> = s.new_pairs_rate.iter().copied().collect();
    f.render_widget(
        Sparkline::default()
            .data(&data)
            .block(Block::new().borders(Borders::ALL).title(" new pairs/s ")),
        total,
    );

    let lines: Vec<Line> = s
        .doc
        .alerts
        .iter()
        .rev()
        .map(|a| {
            let src = a
                .source
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "-".into());
            Line::from(format!(
                "{}  {:<22} {:<8} {:<16} {}",
                a.ts.format("%H:%M:%S"),
                a.code,
                a.severity,
                src,
                a.message
            ))
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" latest alerts ")),
        alerts,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::metrics::top::{TopDoc, TopSource};

    /// At 80 columns every address in the sources table is whole (it was
    /// cut to `10.99.`), IPv6 included.
    #[test]
    fn eighty_columns_keep_whole_addresses() {
        let now = chrono::Utc::now();
        let source = |ip: &str| TopSource {
            source: ip.parse().unwrap(),
            distinct_destinations: 25,
            new_pairs: 30,
            first_seen: now,
            last_seen: now,
        };
        let ips = ["10.99.123.234", "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe"];
        let mut state = TopState::default();
        state.doc = TopDoc {
            ts: Some(now),
            sources: ips.iter().map(|ip| source(ip)).collect(),
            ..TopDoc::default()
        };
        for width in [80, 100, 160] {
            let mut term = Terminal::new(TestBackend::new(width, 40)).unwrap();
            term.draw(|f| draw(f, &state, "127.0.0.1:9445".parse().unwrap()))
                .unwrap();
            let buf = term.backend().buffer();
            let text: String = (0..buf.area.height)
                .map(|y| {
                    (0..buf.area.width)
                        .map(|x| buf[(x, y)].symbol())
                        .collect::<String>()
                        + "\n"
                })
                .collect();
            for ip in ips {
                assert!(text.contains(ip), "{width} columns lack {ip}:\n{text}");
            }
            assert!(text.contains("COUNTER"), "{width} columns:\n{text}");
        }
    }
}
