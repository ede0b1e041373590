//! What a one-record line is, by its first character: how line inputs
//! (stdin, followed files, the listener) pick a parser.

/// The format of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// A JSON object (Winlogbeat, NXLog, evtx_dump).
    Json,
    /// An XML `<Event>`.
    Xml,
    /// Blank.
    Empty,
    /// Neither (a bad record).
    Other,
}

impl LineFormat {
    /// The formats a record can have, in counter order (the listener's
    /// metrics).
    pub const RECORDS: [Self; 3] = [Self::Json, Self::Xml, Self::Other];

    /// The format of `line` (a byte-order mark and spaces ignored).
    pub fn of(line: &str) -> Self {
        match line
            .trim_start_matches('\u{feff}')
            .trim_start()
            .as_bytes()
            .first()
        {
            None => Self::Empty,
            Some(b'{') => Self::Json,
            Some(b'<') => Self::Xml,
            Some(_) => Self::Other,
        }
    }

    /// Its index in [`Self::RECORDS`] (`Empty` counts as `Other`).
    pub fn slot(self) -> usize {
        match self {
            Self::Json => 0,
            Self::Xml => 1,
            Self::Empty | Self::Other => 2,
        }
    }

    /// Lower-case name (a metric label value).
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Xml => "xml",
            Self::Empty => "empty",
            Self::Other => "other",
        }
    }
}

/// What became of one record of a line input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineOutcome {
    /// An event, sent on to the pipeline.
    Forwarded,
    /// Well-formed, of an event id smbwatch does not use.
    Skipped,
    /// Failed to parse.
    Bad,
}

impl LineOutcome {
    /// Every outcome, in counter order.
    pub const ALL: [Self; 3] = [Self::Forwarded, Self::Skipped, Self::Bad];

    /// Lower-case name (a metric label value).
    pub fn name(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Skipped => "skipped",
            Self::Bad => "bad",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LineFormat;

    #[test]
    fn formats() {
        assert_eq!(LineFormat::of("\u{feff} {\"EventID\":3}"), LineFormat::Json);
        assert_eq!(LineFormat::of("<Event xmlns=''>"), LineFormat::Xml);
        assert_eq!(LineFormat::of("   "), LineFormat::Empty);
        assert_eq!(LineFormat::of("EventID: 3"), LineFormat::Other);
        for (i, f) in LineFormat::RECORDS.iter().enumerate() {
            assert_eq!(f.slot(), i);
        }
    }
}
