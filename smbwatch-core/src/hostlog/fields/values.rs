//! Reading one field's value: numbers, addresses, ports, times, accounts
//! and the Windows codes (access rights, direction) the records carry.

use std::borrow::Cow;
use std::net::IpAddr;

use super::super::time::{self, Stamp};
use super::super::{clip, Account, Direction, RecordProblem};
use super::{invalid, Val};

/// The requested access of a 5140/5145: `AccessMask` (`0x120196`), or,
/// without one, the rights `AccessList` names as message ids (`%%4416`
/// ReadData = bit 0 ... `%%4424` WriteAttributes = bit 8; the real
/// records carry both, see docs/hostlogs.md).
pub(super) fn access(
    mask: Option<&Val<'_>>,
    list: Option<&Val<'_>>,
) -> Result<Option<u32>, RecordProblem> {
    if let Some(v) = mask {
        if let Some(n) = v.number("AccessMask")? {
            return u32::try_from(n)
                .map(Some)
                .map_err(|_| invalid("AccessMask", &n.to_string()));
        }
    }
    let Some(list) = list.and_then(|v| v.present()) else {
        return Ok(None);
    };
    let bits = list
        .split_whitespace()
        .filter_map(|t| t.strip_prefix("%%")?.parse::<u32>().ok())
        .filter_map(|id| id.checked_sub(4416).filter(|b| *b <= 8))
        .fold(0u32, |m, b| m | (1 << b));
    Ok((bits != 0).then_some(bits))
}

pub(super) fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

pub(super) fn text(v: &Option<Val<'_>>) -> Option<String> {
    v.as_ref().and_then(|v| v.present()).map(Cow::into_owned)
}

/// A SID as logged; `S-1-0-0` (the null SID, "nobody") is no SID.
pub(super) fn sid(v: &Option<Val<'_>>) -> Option<String> {
    text(v).filter(|s| s != "S-1-0-0")
}

/// An account from its domain and name fields; `None` without a name.
pub(super) fn account(domain: &Option<Val<'_>>, name: &Option<Val<'_>>) -> Option<Account> {
    let name = text(name)?;
    Some(Account {
        domain: text(domain),
        name: Some(name),
        sid: None,
    })
}

/// A time field: text (`2020-09-20 06:57:46.164`, RFC 3339) or a Unix epoch
/// number (NXLog `integer($EventTime)`), the latter also as a digit string.
pub(super) fn stamp(
    field: &'static str,
    v: Option<&Val<'_>>,
) -> Result<Option<Stamp>, RecordProblem> {
    let epoch = match v {
        Some(Val::U64(n)) => Some(i64::try_from(*n).ok()),
        Some(Val::I64(n)) => Some(Some(*n)),
        Some(Val::F64(f)) if f.is_finite() && f.abs() < 9.0e18 => Some(Some(*f as i64)),
        _ => None,
    };
    let Some(t) = v.and_then(|v| v.present()) else {
        return Ok(None);
    };
    let epoch = epoch.or_else(|| {
        (t.len() >= 9 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse::<i64>().ok())
    });
    let parsed = match epoch {
        Some(n) => n.and_then(time::from_epoch),
        None => time::parse(&t),
    };
    let s = parsed.ok_or_else(|| invalid(field, &t))?;
    // Zone-less readings are checked as UTC: ±14 h at the bounds is moot.
    if !time::in_range(s.utc_or_assume()) {
        return Err(RecordProblem::TimeOutOfRange {
            field,
            value: clip(&t),
        });
    }
    Ok(Some(s))
}

pub(super) fn ip(
    field: &'static str,
    v: Option<&Val<'_>>,
) -> Result<Option<IpAddr>, RecordProblem> {
    let Some(t) = v.and_then(|v| v.present()) else {
        return Ok(None);
    };
    // IPv6 link-local addresses may carry a zone (`fe80::1%12`).
    let bare = t.split_once('%').map_or(t.as_ref(), |(a, _)| a);
    bare.parse::<IpAddr>()
        .map(|a| Some(a.to_canonical()))
        .map_err(|_| invalid(field, &t))
}

pub(super) fn port(field: &'static str, v: Option<&Val<'_>>) -> Result<Option<u16>, RecordProblem> {
    let Some(v) = v else { return Ok(None) };
    match v.number(field)? {
        // Windows writes 0 for "no port" (local logons).
        None | Some(0) => Ok(None),
        Some(n) => u16::try_from(n)
            .map(Some)
            .map_err(|_| invalid(field, &n.to_string())),
    }
}

pub(super) fn pid(field: &'static str, v: Option<&Val<'_>>) -> Result<Option<u32>, RecordProblem> {
    let Some(v) = v else { return Ok(None) };
    match v.number(field)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| invalid(field, &n.to_string())),
    }
}

pub(super) fn protocol(v: Option<&Val<'_>>) -> Result<Option<u8>, RecordProblem> {
    let Some(t) = v.and_then(|v| v.present()) else {
        return Ok(None);
    };
    if t.eq_ignore_ascii_case("tcp") {
        return Ok(Some(6));
    }
    if t.eq_ignore_ascii_case("udp") {
        return Ok(Some(17));
    }
    t.parse::<u8>()
        .map(Some)
        .map_err(|_| invalid("Protocol", &t))
}

/// 5156 `Direction` (`%%14593`/`%%14592` or the rendered words), Sysmon
/// `Initiated` (`true`/`True`/`false`), ECS `network.direction`. Unknown
/// spellings (a localised rendering) leave the direction unknown rather
/// than losing the connection.
pub(super) fn direction(v: Option<&Val<'_>>) -> Option<Direction> {
    let t = v?.present()?;
    let t = t.as_ref();
    const OUT: [&str; 5] = ["%%14593", "outbound", "true", "egress", "1"];
    const IN: [&str; 5] = ["%%14592", "inbound", "false", "ingress", "0"];
    if OUT.iter().any(|w| t.eq_ignore_ascii_case(w)) {
        Some(Direction::Outbound)
    } else if IN.iter().any(|w| t.eq_ignore_ascii_case(w)) {
        Some(Direction::Inbound)
    } else {
        None
    }
}

/// A logon session id (`0x2074186`); `0x0` (no session) is none.
pub(super) fn logon_id(
    field: &'static str,
    v: &Option<Val<'_>>,
) -> Result<Option<u64>, RecordProblem> {
    match v {
        Some(v) => Ok(v.number(field)?.filter(|n| *n != 0)),
        None => Ok(None),
    }
}

/// What a 4698 task runs: the first `<Command>` of its XML and its
/// `<Arguments>`, unescaped as far as XML's five entities (the value is
/// capped with the record). `None` for a task without an exec action (a
/// COM handler).
pub(super) fn task_command(xml: &str) -> Option<String> {
    fn element<'x>(xml: &'x str, name: &str) -> Option<&'x str> {
        let open = format!("<{name}>");
        let start = xml.find(&open)? + open.len();
        let len = xml[start..].find(&format!("</{name}>"))?;
        Some(xml[start..start + len].trim())
    }
    let unescape = |s: &str| {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    };
    let command = element(xml, "Command").filter(|c| !c.is_empty())?;
    Some(match element(xml, "Arguments").filter(|a| !a.is_empty()) {
        Some(args) => format!("{} {}", unescape(command), unescape(args)),
        None => unescape(command),
    })
}
