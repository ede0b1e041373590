//! Who: `user.*`, `host.*`, `process.*` (with its parent) and `related.*`,
//! the values a SIEM pivots on.

use std::net::IpAddr;

use serde::Serialize;

#[cfg(doc)]
use super::user;
use super::{empty, Empty};
use crate::alert::{ProcessContext, ProcessInfo};

/// `user.*`: see [`user::split`] for name, domain and case.
#[derive(Debug, Default, Serialize)]
pub struct User<'a> {
    /// Short name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Domain, upper-cased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Security identifier (SID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
}

/// `host.*`.
#[derive(Debug, Default, Serialize)]
pub struct Host {
    /// Host name from host logs, lower-cased (ECS: `host.name` lower case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `related.*`.
#[derive(Debug, Default, Serialize)]
pub struct Related {
    /// Every address: source, destination, scanned destinations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip: Vec<IpAddr>,
    /// The user's short name and SID.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user: Vec<String>,
    /// `host.name` and `observer.hostname`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

pub(super) fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// `process.*` (and the elements of `smbwatch.processes`).
#[derive(Debug, Default, Serialize)]
pub struct Process<'a> {
    /// File name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Full path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<&'a str>,
    /// Command line (from 4688 / Sysmon 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<&'a str>,
    /// `process.parent.*`.
    #[serde(skip_serializing_if = "empty")]
    pub parent: Parent<'a>,
}

/// `process.parent.*`.
#[derive(Debug, Default, Serialize)]
pub struct Parent<'a> {
    /// Full path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<&'a str>,
    /// Command line, when the parent's creation was seen too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<&'a str>,
}

impl<'a> From<&'a ProcessInfo> for Process<'a> {
    fn from(p: &'a ProcessInfo) -> Self {
        Self {
            name: p.name.as_deref(),
            pid: p.pid,
            executable: p.executable.as_deref(),
            command_line: None,
            parent: Parent::default(),
        }
    }
}

impl<'a> Process<'a> {
    /// The process with what its creation record said.
    pub(super) fn with_context(mut self, c: Option<&'a ProcessContext>) -> Self {
        if let Some(c) = c {
            self.command_line = c.command_line.as_deref();
            self.parent = Parent {
                executable: c.parent_executable.as_deref(),
                command_line: c.parent_command_line.as_deref(),
            };
        }
        self
    }
}

impl Empty for Process<'_> {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.pid.is_none()
            && self.executable.is_none()
            && self.command_line.is_none()
            && self.parent.is_empty()
    }
}

impl Empty for Parent<'_> {
    fn is_empty(&self) -> bool {
        self.executable.is_none() && self.command_line.is_none()
    }
}

impl Empty for User<'_> {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.domain.is_none() && self.id.is_none()
    }
}

impl Empty for Host {
    fn is_empty(&self) -> bool {
        self.name.is_none()
    }
}

impl Empty for Related {
    fn is_empty(&self) -> bool {
        self.ip.is_empty() && self.user.is_empty() && self.hosts.is_empty()
    }
}
