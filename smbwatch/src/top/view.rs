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

/// Draws the whole view.
pub fn draw(f: &mut Frame, s: &TopState, addr: SocketAddr) {
    let [title, body, alerts] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(8),
        Constraint::Length(10),
    ])
    .areas(f.area());
    let [sources, side] =
        Layout::horizontal([Constraint::Min(60), Constraint::Length(40)]).areas(body);
    let [counters, total] = Layout::vertical([
        Constraint::Length(COUNTERS.len() as u16 + 3),
        Constraint::Min(3),
    ])
    .areas(side);

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
                Constraint::Length(39),
                Constraint::Length(6),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(SPARK as u16),
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
