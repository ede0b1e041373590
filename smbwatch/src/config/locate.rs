//! Where a key is in the text: every error names the file, the line and
//! the key. The document is walked with `toml_edit`, which keeps the span
//! of every key.

use std::ops::Range;

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// Every key (and array element) of a document with its dotted path: the
/// span to report (the key) and the span it covers (key through value).
fn spans(text: &str) -> Vec<(String, usize, Range<usize>)> {
    use toml_edit::{ImDocument, Item, TableLike, Value};

    fn value(path: String, v: &Value, out: &mut Vec<(String, usize, Range<usize>)>) {
        match v {
            Value::Array(a) => {
                for (i, e) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if let Some(s) = e.span() {
                        out.push((p.clone(), s.start, s.clone()));
                    }
                    value(p, e, out);
                }
            }
            Value::InlineTable(t) => table(&path, t, out),
            _ => {}
        }
    }
    fn table(prefix: &str, t: &dyn TableLike, out: &mut Vec<(String, usize, Range<usize>)>) {
        for (k, item) in t.iter() {
            let path = if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            };
            let key_span = t.get_key_value(k).and_then(|(key, _)| key.span());
            match item {
                Item::Value(v) => {
                    if let (Some(ks), Some(vs)) = (key_span, v.span()) {
                        out.push((path.clone(), ks.start, ks.start..vs.end));
                    }
                    value(path, v, out);
                }
                Item::Table(sub) => {
                    if let Some(s) = sub.span() {
                        out.push((path.clone(), s.start, s));
                    }
                    table(&path, sub, out);
                }
                Item::ArrayOfTables(a) => {
                    for (i, sub) in a.iter().enumerate() {
                        let p = format!("{path}[{i}]");
                        if let Some(s) = sub.span() {
                            out.push((p.clone(), s.start, s));
                        }
                        table(&p, sub, out);
                    }
                }
                Item::None => {}
            }
        }
    }

    let Ok(doc) = ImDocument::parse(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    table("", doc.as_table(), &mut out);
    out
}

/// The most specific key whose text covers `offset`.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    spans(text)
        .into_iter()
        .filter(|(_, _, cover)| cover.contains(&offset) || cover.start == offset)
        .min_by_key(|(_, _, cover)| cover.len())
        .map(|(path, _, _)| path)
}

/// Offset of `key` in the text; for a key that is absent (its default is
/// in force), the nearest enclosing table or element that is present.
pub(super) fn locate(text: &str, key: &str) -> Option<usize> {
    let all = spans(text);
    let mut key = key;
    loop {
        if let Some((_, at, _)) = all.iter().find(|(p, _, _)| p == key) {
            return Some(*at);
        }
        key = &key[..key.rfind(['.', '['])?];
    }
}
