//! The definition of every field smbwatch writes, and a check of documents
//! against them.
//!
//! ECS fields are copied from ECS 9.4.0's published definitions
//! (`generated/ecs/ecs_flat.yml` at tag `v9.4.0` of elastic/ecs): type,
//! whether ECS normalises the field to an array, and the allowed values
//! where ECS lists them. `smbwatch.*` fields are ours; their types are the
//! ones the index template in `docs/siem.md` maps. A field written without
//! a definition here fails [`validate`], and with it the tests that hold
//! every alert kind (and event lines) to this table.

use std::net::IpAddr;

use serde_json::Value;

/// An Elasticsearch field type, as ECS names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// `date`: an RFC 3339 string.
    Date,
    /// `keyword`: a string.
    Keyword,
    /// `wildcard`: a string.
    Wildcard,
    /// `match_only_text`: a string.
    MatchOnlyText,
    /// `long`: an integer.
    Long,
    /// `float`: a number.
    Float,
    /// `ip`: an IPv4 or IPv6 address string.
    Ip,
    /// `boolean`.
    Boolean,
    /// `object` holding sub-fields (arrays of objects: `smbwatch.processes`).
    Object,
}

/// One field's definition.
#[derive(Debug)]
pub struct Field {
    /// Dotted name.
    pub name: &'static str,
    /// Type.
    pub ty: Type,
    /// ECS `normalize: array`: always written as a list.
    pub array: bool,
    /// ECS allowed (or expected) values; empty: any.
    pub allowed: &'static [&'static str],
}

const fn f(name: &'static str, ty: Type) -> Field {
    Field {
        name,
        ty,
        array: false,
        allowed: &[],
    }
}

const fn list(name: &'static str, ty: Type) -> Field {
    Field {
        name,
        ty,
        array: true,
        allowed: &[],
    }
}

const fn one_of(name: &'static str, allowed: &'static [&'static str]) -> Field {
    Field {
        name,
        ty: Type::Keyword,
        array: false,
        allowed,
    }
}

const fn list_of(name: &'static str, allowed: &'static [&'static str]) -> Field {
    Field {
        name,
        ty: Type::Keyword,
        array: true,
        allowed,
    }
}

/// The ECS version the definitions below come from.
pub const ECS_DEFINITIONS: &str = "9.4.0";

use Type::*;

/// Every field smbwatch writes (alerts and event lines).
pub const FIELDS: &[Field] = &[
    // ECS 9.4.0.
    f("@timestamp", Date),
    f("message", MatchOnlyText),
    f("ecs.version", Keyword),
    one_of(
        "event.kind",
        &[
            "alert",
            "asset",
            "enrichment",
            "event",
            "metric",
            "state",
            "pipeline_error",
            "signal",
        ],
    ),
    list_of(
        "event.category",
        &[
            "api",
            "authentication",
            "configuration",
            "database",
            "driver",
            "email",
            "file",
            "host",
            "iam",
            "intrusion_detection",
            "library",
            "malware",
            "network",
            "package",
            "process",
            "registry",
            "session",
            "threat",
            "vulnerability",
            "web",
        ],
    ),
    list_of(
        "event.type",
        &[
            "access",
            "admin",
            "allowed",
            "change",
            "connection",
            "creation",
            "deletion",
            "denied",
            "device",
            "end",
            "error",
            "group",
            "indicator",
            "info",
            "installation",
            "protocol",
            "start",
            "user",
        ],
    ),
    f("event.action", Keyword),
    one_of("event.outcome", &["failure", "success", "unknown"]),
    f("event.module", Keyword),
    f("event.dataset", Keyword),
    f("event.code", Keyword),
    f("event.id", Keyword),
    f("event.severity", Long),
    f("event.risk_score", Float),
    f("event.created", Date),
    f("event.start", Date),
    f("event.end", Date),
    f("rule.id", Keyword),
    f("rule.name", Keyword),
    f("rule.reference", Keyword),
    f("rule.ruleset", Keyword),
    f("rule.version", Keyword),
    f("source.ip", Ip),
    f("source.port", Long),
    f("source.domain", Keyword),
    f("source.mac", Keyword),
    f("destination.ip", Ip),
    f("destination.port", Long),
    f("network.transport", Keyword),
    f("network.type", Keyword),
    f("network.protocol", Keyword),
    f("file.path", Keyword),
    f("file.name", Keyword),
    one_of(
        "network.direction",
        &[
            "ingress", "egress", "inbound", "outbound", "internal", "external", "unknown",
        ],
    ),
    f("network.community_id", Keyword),
    f("threat.framework", Keyword),
    list("threat.tactic.id", Keyword),
    list("threat.tactic.name", Keyword),
    list("threat.tactic.reference", Keyword),
    list("threat.technique.id", Keyword),
    list("threat.technique.name", Keyword),
    list("threat.technique.reference", Keyword),
    list("threat.technique.subtechnique.id", Keyword),
    list("threat.technique.subtechnique.name", Keyword),
    list("threat.technique.subtechnique.reference", Keyword),
    f("observer.type", Keyword),
    f("observer.vendor", Keyword),
    f("observer.product", Keyword),
    f("observer.version", Keyword),
    f("observer.hostname", Keyword),
    // ECS does not normalise `observer.name` to an array; Elasticsearch
    // keyword fields hold lists all the same, and the fleet aggregator
    // lists every gateway that saw the source (docs/fleet.md).
    list("observer.name", Keyword),
    f("observer.ingress.interface.id", Keyword),
    f("observer.ingress.interface.name", Keyword),
    f("observer.ingress.vlan.id", Keyword),
    f("process.name", Keyword),
    f("process.pid", Long),
    f("process.executable", Keyword),
    f("process.command_line", Wildcard),
    f("process.parent.executable", Keyword),
    f("process.parent.command_line", Wildcard),
    f("process.parent.name", Keyword),
    f("process.parent.pid", Long),
    f("user.name", Keyword),
    f("user.domain", Keyword),
    f("user.id", Keyword),
    f("host.name", Keyword),
    list("related.ip", Ip),
    list("related.user", Keyword),
    list("related.hosts", Keyword),
    // smbwatch's own (docs/siem.md maps them).
    f("smbwatch.share", Keyword),
    f("smbwatch.distinct_destinations", Long),
    list("smbwatch.destinations", Ip),
    f("smbwatch.syns", Long),
    f("smbwatch.fragmented_syns", Long),
    f("smbwatch.accepted", Long),
    f("smbwatch.refused", Long),
    f("smbwatch.window_secs", Long),
    f("smbwatch.scale", Keyword),
    f("smbwatch.prefix", Keyword),
    f("smbwatch.prefix_members", Long),
    list("smbwatch.prefix_top_members", Ip),
    list("smbwatch.processes", Object),
    f("smbwatch.processes.name", Keyword),
    f("smbwatch.processes.pid", Long),
    f("smbwatch.processes.executable", Keyword),
    f("smbwatch.processes.command_line", Wildcard),
    one_of(
        "smbwatch.process_class",
        &["script_interpreter", "lolbin", "office", "browser"],
    ),
    f("smbwatch.original_timestamp", Keyword),
    f("smbwatch.fragmented", Boolean),
    f("smbwatch.after_accept", Boolean),
    f("smbwatch.kernel_fanout", Long),
    // SMB on the wire, named as Suricata and Zeek name them (docs/smb.md);
    // docs/siem.md maps them too.
    f("smb.path", Keyword),
    f("smb.share_type", Keyword),
    f("smb.named_pipe", Keyword),
    f("smb.dialect", Keyword),
    list("smb.dialects", Keyword),
    one_of(
        "smb.exploit",
        &["eternalblue", "doublepulsar_command", "doublepulsar_answer"],
    ),
    f("smb.status", Keyword),
    f("smb.access", Keyword),
    f("smb.disposition", Long),
    f("smb.offset", Long),
    f("smb.length", Long),
    f("smb.session_id", Keyword),
    one_of("smb.logon", &["anonymous", "guest"]),
    f("smb.unseen", Keyword),
    f("smb.unseen_detail", Keyword),
    f("smb.unseen_bytes", Long),
    f("smb.calls", Long),
    f("smb.renamed_from", Keyword),
    list("smb.host_events", Long),
    // An object of its own (name and UUID together).
    f("rpc.interface", Object),
    f("rpc.interface.name", Keyword),
    f("rpc.interface.uuid", Keyword),
    f("rpc.opnum", Long),
    list("rpc.operation", Keyword),
    f("rpc.unbound", Keyword),
];

/// The definition of `name`, if any.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Every way `doc` departs from [`FIELDS`]: an undefined field, a wrong
/// type, a list where none belongs (or a scalar where ECS wants a list), a
/// value ECS does not allow. Empty when the document conforms.
pub fn validate(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    match doc {
        Value::Object(m) => {
            for (k, v) in m {
                check(k, v, &mut errors);
            }
        }
        _ => errors.push(format!("not a JSON object: {doc}")),
    }
    errors
}

fn check(name: &str, v: &Value, errors: &mut Vec<String>) {
    let def = field(name);
    if def.is_none() {
        if let Value::Object(m) = v {
            // An object of sub-fields (`event`, `source`, ...).
            for (k, sub) in m {
                check(&format!("{name}.{k}"), sub, errors);
            }
            return;
        }
        errors.push(format!("{name}: not defined in the ECS field table"));
        return;
    }
    let def = def.expect("checked above");
    let items: Vec<&Value> = match v {
        Value::Array(a) => {
            if !def.array {
                errors.push(format!("{name}: a list, but the field is single-valued"));
            }
            a.iter().collect()
        }
        _ => {
            if def.array {
                errors.push(format!("{name}: ECS wants a list, got {v}"));
            }
            vec![v]
        }
    };
    for item in items {
        if def.ty == Type::Object {
            match item {
                Value::Object(m) => {
                    for (k, sub) in m {
                        check(&format!("{name}.{k}"), sub, errors);
                    }
                }
                _ => errors.push(format!("{name}: not an object: {item}")),
            }
            continue;
        }
        if !has_type(def.ty, item) {
            errors.push(format!("{name}: {item} is not a {:?}", def.ty));
        }
        if !def.allowed.is_empty() && !item.as_str().is_some_and(|s| def.allowed.contains(&s)) {
            errors.push(format!("{name}: {item} is not an allowed value"));
        }
    }
}

fn has_type(ty: Type, v: &Value) -> bool {
    match ty {
        Date => v
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        Keyword | Wildcard | MatchOnlyText => v.is_string(),
        Long => v.is_i64() || v.is_u64(),
        Float => v.is_number(),
        Ip => v.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
        Boolean => v.is_boolean(),
        Object => v.is_object(),
    }
}

#[cfg(test)]
#[path = "fields_tests.rs"]
mod tests;
