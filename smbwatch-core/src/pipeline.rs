//! One detection path for the daemon and for replay: gateway events and host
//! events in, alerts out.
//!
//! Pure: no I/O, time comes from the events (and from [`Pipeline::advance`],
//! which the daemon calls with the wall clock and replay with capture time).

use chrono::{DateTime, Utc};

use crate::{
    alert::{Alert, AlertKind},
    correlate::{process::ProcessClassesConfig, CorrelateConfig, Correlator},
    detect::{DetectConfig, Detector},
    event::GatewayEvent,
    hostlog::{
        rules::{HostRules, HostRulesConfig},
        HostEvent,
    },
    smb::{SmbEvent, SmbMonitor, SmbOutputs, SmbSample, SmbSettings},
};

/// The settings a [`Pipeline`] is built from: the application resolves
/// them from its configuration file's sections.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    /// `[detect]`: scan detection.
    pub detect: DetectConfig,
    /// `[hostlog.rules]`: the host rules.
    pub rules: HostRulesConfig,
    /// `[hostlog] max_ahead`: how far ahead of the pipeline's clock a host
    /// event may be dated.
    pub max_ahead: std::time::Duration,
    /// `[correlate]`: joining gateway pairs with host logs.
    pub correlate: CorrelateConfig,
    /// `[process_classes]`: client images that make an SMB alert high.
    pub process_classes: ProcessClassesConfig,
    /// `[smb]`: SMB on the wire (sampled payload).
    pub smb: SmbSettings,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            detect: DetectConfig::default(),
            rules: HostRulesConfig::default(),
            max_ahead: crate::timed::DEFAULT_MAX_AHEAD,
            correlate: CorrelateConfig::default(),
            process_classes: ProcessClassesConfig::default(),
            smb: SmbSettings::default(),
        }
    }
}

/// Detector, host rules and correlator, wired together.
pub struct Pipeline {
    detector: Detector,
    rules: HostRules,
    correlator: Correlator,
    /// Whether host events can arrive at all; without them gateway pairs
    /// are not kept for correlation (under a flood that bookkeeping is most
    /// of the cost of an event).
    host_inputs: bool,
    /// The learned SMB baseline, when one is in use (`--baseline`).
    baseline: Option<crate::baseline::Baseline>,
    /// SMB connections on the wire (sampled payload).
    smb: SmbMonitor,
}

impl Pipeline {
    /// A pipeline with these detection and correlation settings.
    pub fn new(cfg: PipelineConfig) -> Self {
        Self {
            detector: Detector::new(cfg.detect),
            rules: HostRules::new(cfg.rules).with_max_ahead(cfg.max_ahead),
            correlator: Correlator::new(cfg.correlate)
                .with_max_ahead(cfg.max_ahead)
                .with_process_classes(cfg.process_classes)
                .with_host_wait(cfg.smb.host_wait),
            host_inputs: true,
            baseline: None,
            smb: SmbMonitor::new(cfg.smb),
        }
    }

    /// Learns into and scores against `b` from here on.
    pub fn with_baseline(mut self, b: crate::baseline::Baseline) -> Self {
        self.baseline = Some(b);
        self
    }

    /// The baseline in use (batches for its store, stats).
    pub fn baseline_mut(&mut self) -> Option<&mut crate::baseline::Baseline> {
        self.baseline.as_mut()
    }

    /// Declares that no host event is expected (no host-log file, stdin or
    /// listener; for the fleet aggregator: until a gateway forwards one):
    /// gateway events then skip correlation until a host event arrives.
    /// Scan alerts are the same either way, having no host records to join.
    pub fn without_host_inputs(mut self) -> Self {
        self.host_inputs = false;
        self
    }

    /// Whether host events are expected (or one has arrived).
    pub fn has_host_inputs(&self) -> bool {
        self.host_inputs
    }

    /// The reloadable settings of `cfg` (see the application's
    /// `config::reload`): detection thresholds, windows, allowlists and
    /// per-subnet rules, and the host rules' allowlist and dedup times.
    /// Detector, correlator and dedup state are kept. `host_inputs`:
    /// whether host events can now arrive (a listener was added by the
    /// reload).
    pub fn reconfigure(&mut self, cfg: &PipelineConfig, host_inputs: bool) {
        self.detector.reconfigure(cfg.detect.clone());
        self.rules.reconfigure(cfg.rules.clone());
        self.host_inputs = host_inputs;
    }

    /// A hint a caller holding a batch of events gives a few events ahead
    /// (see [`Detector::prefetch`]).
    pub fn prefetch(&self, ev: &GatewayEvent) {
        self.detector.prefetch(ev);
        if self.host_inputs {
            self.correlator.prefetch(ev);
        }
    }

    /// A gateway event: scan detection, then correlation with host logs.
    pub fn gateway_event(&mut self, ev: &GatewayEvent) -> Vec<Alert> {
        if self.host_inputs {
            // The attribution is kept by the correlator; alerts are
            // enriched from it when they are raised. The correlator runs
            // first (the two keep separate state, and scan alerts reach it
            // below either way) so that under churn the detector's first
            // cache misses, asked for here, overlap the correlator's work.
            self.detector.prefetch(ev);
            self.correlator.prefetch(ev);
            self.correlator.on_gateway_event(ev);
        }
        let scans = self.detector.observe(ev);
        let found = match self.baseline.as_mut() {
            Some(b) => b.observe(ev),
            None => Vec::new(),
        };
        if scans.is_empty() {
            return found;
        }
        let mut out = self.scan_alerts(scans);
        out.extend(found);
        out
    }

    /// One sampled SMB payload segment (kernel sampling, or replay): the
    /// connection's observations as event lines (`--events`), and the
    /// alerts of the SMB rules. Alerts are handled like
    /// [`Self::gateway_event`]'s.
    pub fn smb_sample(&mut self, sample: &SmbSample<'_>) -> SmbOutputs {
        let mut out = Vec::new();
        self.correlator.saw_wire();
        self.smb.observe(sample, &mut out);
        self.wire_outputs(out, sample.ts)
    }

    /// Routes the monitor's alerts through the correlator (joined with
    /// host records, chains), releasing alerts whose wait ended by `now`.
    fn wire_outputs(&mut self, out: Vec<crate::smb::SmbOutput>, now: DateTime<Utc>) -> SmbOutputs {
        let mut s = SmbOutputs::from_outputs(out);
        let raised = std::mem::take(&mut s.alerts);
        for a in raised {
            s.alerts
                .extend(self.correlator.on_wire_alert(a, self.host_inputs));
        }
        s.alerts.extend(self.correlator.release_wire(now));
        s
    }

    /// Lets time pass for the SMB connections: those idle for `[smb]
    /// idle_timeout` are finished (their last observations and alerts
    /// returned) and dropped. Call it with [`Self::advance`].
    pub fn smb_expire(&mut self, now: DateTime<Utc>) -> SmbOutputs {
        let mut out = Vec::new();
        self.smb.expire(now, &mut out);
        self.wire_outputs(out, now)
    }

    /// The end of input (replay's last packet, the daemon stopping): every
    /// SMB connection is finished (its last observations and alerts
    /// returned) and every SMB alert still waiting for a host record goes
    /// out, so nothing accepted is lost.
    pub fn smb_flush(&mut self) -> SmbOutputs {
        let mut out = Vec::new();
        self.smb.finish_all(&mut out);
        let mut s = SmbOutputs::from_outputs(out);
        let raised = std::mem::take(&mut s.alerts);
        for a in raised {
            s.alerts.extend(self.correlator.on_wire_alert(a, false));
        }
        s.alerts.extend(self.correlator.release_all_wire());
        s
    }

    /// The SMB monitor (counters, settings).
    pub fn smb(&self) -> &SmbMonitor {
        &self.smb
    }

    /// A host event: host rules, then correlation (attribution, chains).
    pub fn host_event(&mut self, ev: &HostEvent) -> Vec<Alert> {
        // Host events do arrive: keep gateway pairs for correlation from now on.
        self.host_inputs = true;
        if let Some(b) = self.baseline.as_mut() {
            // A host's own outbound connection (Sysmon 3, 5156) names it
            // at its address; a network logon (4624) names its client
            // workstation at the client's address: the baseline learns
            // that client by name.
            match &ev.record {
                crate::hostlog::HostRecord::NetworkConnection(c)
                    if c.direction == Some(crate::hostlog::Direction::Outbound) =>
                {
                    if let (Some(host), Some(ip)) = (ev.host.as_deref(), c.src_ip) {
                        b.observe_logon(ev.ts.timestamp(), ip, host);
                    }
                }
                crate::hostlog::HostRecord::Logon(l) => {
                    let name = l
                        .workstation
                        .as_deref()
                        .filter(|n| !n.is_empty() && *n != "-");
                    if let (Some(name), Some(ip)) = (name, l.src_ip.filter(|a| !a.is_loopback())) {
                        b.observe_logon(ev.ts.timestamp(), ip, name);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        let chained = self.correlator.on_host_event(ev);
        // The act an SMB alert from the wire carries (now or already).
        let joined = self.correlator.take_joined_wire();
        if let Some(mut alert) = self.rules.check(ev) {
            let share = alert.kind == AlertKind::AdminShareAccess;
            if !(joined && share) {
                self.correlator.enrich_alert(&mut alert);
                if share {
                    out.extend(self.correlator.host_share_alert(ev, alert));
                } else {
                    out.push(alert);
                }
            }
        }
        out.extend(chained);
        out
    }

    /// Lets time pass without events (pairs left unanswered become TRW
    /// failures after `response_timeout`).
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        self.set_clock(now);
        let scans = self.detector.advance(now);
        let mut out = self.scan_alerts(scans);
        // SMB alerts whose wait for a host record is over.
        out.extend(self.correlator.release_wire(now));
        out
    }

    /// The reference clock of the host-side state: host events never move
    /// it, and one dated more than `hostlog.max_ahead` past it is rejected.
    fn set_clock(&mut self, now: DateTime<Utc>) {
        self.correlator.advance(now);
        self.rules.advance(now);
    }

    fn scan_alerts(&mut self, scans: Vec<Alert>) -> Vec<Alert> {
        let mut out = Vec::with_capacity(scans.len());
        for mut alert in scans {
            // The detector's kinds: a scan, or a sweep hidden from the
            // parser (all name a source that probed many hosts).
            debug_assert!(matches!(
                alert.kind,
                AlertKind::SmbScanFanout | AlertKind::SmbScanTrw | AlertKind::SmbEvasionAttempt
            ));
            let chained = self.correlator.on_scan_alert(&alert);
            self.correlator.enrich_scan_alert(&mut alert);
            out.push(alert);
            out.extend(chained);
        }
        out
    }

    /// The scan detector's counters.
    pub fn detector_stats(&self) -> crate::detect::DetectStats {
        self.detector.stats()
    }

    /// The scan detector (stats, cap notices).
    pub fn detector_mut(&mut self) -> &mut Detector {
        &mut self.detector
    }

    /// The correlator (attributions, stats).
    pub fn correlator(&self) -> &Correlator {
        &self.correlator
    }

    /// The host rules (stats).
    pub fn rules(&self) -> &HostRules {
        &self.rules
    }

    /// The last host event rejected as dated too far ahead, with the count
    /// so far, once per rejection: for the daemon's log (one line per
    /// housekeeping tick, not one per event).
    pub fn take_host_rejection(&mut self) -> Option<(crate::correlate::TooFarAhead, u64)> {
        // Both judge every host event against the same clock; the rules'
        // report would repeat the correlator's.
        let _ = self.rules.take_rejected();
        self.correlator.take_rejected()
    }
}

/// Replay glue: captured gateway events and host-log events, merged by
/// time, through one [`Pipeline`]; each alert goes to `on_alert`.
pub struct ReplayFeed<'a> {
    pipeline: Pipeline,
    host: std::iter::Peekable<std::vec::IntoIter<HostEvent>>,
    on_alert: &'a mut dyn FnMut(&Alert),
    on_event: Option<&'a mut dyn FnMut(&GatewayEvent)>,
    on_smb_event: Option<&'a mut dyn FnMut(&SmbEvent)>,
    alerts: u64,
}

impl<'a> ReplayFeed<'a> {
    /// Also hands every gateway event to `f`, before detection sees it
    /// (`replay --events`, tests that keep the events).
    pub fn with_events(mut self, f: &'a mut dyn FnMut(&GatewayEvent)) -> Self {
        self.on_event = Some(f);
        self
    }

    /// A feed over `host` events (any order; sorted here by time).
    pub fn new(
        pipeline: Pipeline,
        mut host: Vec<HostEvent>,
        on_alert: &'a mut dyn FnMut(&Alert),
    ) -> Self {
        host.sort_by_key(|e| e.ts);
        Self {
            pipeline,
            host: host.into_iter().peekable(),
            on_alert,
            on_event: None,
            on_smb_event: None,
            alerts: 0,
        }
    }

    fn emit(&mut self, alerts: Vec<Alert>) {
        for a in &alerts {
            (self.on_alert)(a);
        }
        self.alerts += alerts.len() as u64;
    }

    /// Host events up to `t`, in time order.
    fn host_until(&mut self, t: DateTime<Utc>) {
        while let Some(ev) = self.host.next_if(|e| e.ts <= t) {
            let out = self.pipeline.host_event(&ev);
            self.emit(out);
        }
    }

    /// Feeds the host events later than the capture, then flushes the SMB
    /// connections and waiting SMB alerts ([`Pipeline::smb_flush`]; their
    /// event lines go to [`Self::with_smb_events`]'s callback); returns the
    /// pipeline.
    pub fn finish(mut self) -> Pipeline {
        while let Some(ev) = self.host.next() {
            let out = self.pipeline.host_event(&ev);
            self.emit(out);
        }
        let out = self.pipeline.smb_flush();
        self.smb_events(&out.events);
        self.emit(out.alerts);
        self.pipeline
    }

    /// Also hands every SMB event line to `f` (`replay --events`): those
    /// of [`Self::smb_sample`] and [`Self::smb_expire`] (which return them
    /// too) and the last ones, flushed by [`Self::finish`].
    pub fn with_smb_events(mut self, f: &'a mut dyn FnMut(&SmbEvent)) -> Self {
        self.on_smb_event = Some(f);
        self
    }

    fn smb_events(&mut self, events: &[SmbEvent]) {
        if let Some(f) = self.on_smb_event.as_mut() {
            events.iter().for_each(f);
        }
    }

    /// Alerts raised so far.
    pub fn alert_count(&self) -> u64 {
        self.alerts
    }
}

/// What replay's sink calls (smbwatch-dataplane's `ReplaySink` for a
/// feed hands each call to these).
impl ReplayFeed<'_> {
    /// One gateway event, in capture order: host events up to its time
    /// first, then detection.
    pub fn event(&mut self, ev: &GatewayEvent) {
        if let Some(f) = self.on_event.as_mut() {
            f(ev);
        }
        self.host_until(ev.ts);
        let out = self.pipeline.gateway_event(ev);
        self.emit(out);
    }

    /// One sampled SMB segment, in capture order: host events up to its
    /// time first, then the SMB monitor; its alerts go to `on_alert`, its
    /// event lines are returned (`replay --events`).
    pub fn smb_sample(&mut self, sample: &SmbSample<'_>) -> Vec<SmbEvent> {
        self.host_until(sample.ts);
        let out = self.pipeline.smb_sample(sample);
        self.smb_events(&out.events);
        self.emit(out.alerts);
        out.events
    }

    /// Capture time has reached `now` for the SMB connections (idle ones
    /// finished; see [`Pipeline::smb_expire`]); returns their last event
    /// lines.
    pub fn smb_expire(&mut self, now: DateTime<Utc>) -> Vec<SmbEvent> {
        let out = self.pipeline.smb_expire(now);
        self.smb_events(&out.events);
        self.emit(out.alerts);
        out.events
    }

    /// Capture time has reached `now`.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        // The clock first: host events up to `now` are judged against it
        // (after a gap in the capture, against the previous packet's time
        // they would look minutes ahead).
        self.pipeline.set_clock(now);
        self.host_until(now);
        let out = self.pipeline.advance(now);
        self.emit(out);
    }
}

#[cfg(test)]
mod cost_tests;

#[cfg(test)]
mod clock_tests {
    use super::*;

    /// A host clock years ahead is rejected against the caller's clock,
    /// reported once, and the next ordinary event still alerts.
    #[test]
    fn host_events_are_judged_against_the_callers_clock() {
        let line = |utc: &str, sport: u16| {
            format!(
                r#"{{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"{utc}","Image":"C:\\x\\python.exe","Initiated":"true","SourceIp":"192.0.2.5","SourcePort":"{sport}","DestinationIp":"192.0.2.6","DestinationPort":"445"}}"#
            )
        };
        let ev = |utc: &str, sport: u16| {
            crate::hostlog::parse_line(&line(utc, sport))
                .unwrap()
                .unwrap()
        };
        let mut p = Pipeline::new(PipelineConfig::default());
        let now = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        p.advance(now);
        assert!(p.host_event(&ev("2100-01-01 00:00:00.000", 1)).is_empty());
        let (why, n) = p.take_host_rejection().unwrap();
        assert_eq!(n, 1);
        assert!(why.to_string().contains("hostlog.max_ahead"), "{why}");
        assert!(p.take_host_rejection().is_none(), "reported once");
        assert_eq!(p.rules().stats().rejected_ahead, 1);
        let alerts = p.host_event(&ev("2026-11-30 09:59:59.000", 2));
        assert_eq!(alerts.len(), 1, "suspicious_smb_client");
    }
}
