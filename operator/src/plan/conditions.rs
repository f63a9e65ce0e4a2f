//! kstatus conditions (Ready / Reconciling / Stalled) with observedGeneration, built from the
//! findings of one planning pass. Transition times are kept from the previous status when a
//! condition did not change, so a converged system writes an identical status on resync.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use ssis_crds::condition_types::{READY, RECONCILING, STALLED};

/// One finding: a CamelCase reason and a message that says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub reason: String,
    pub message: String,
}

/// Findings of one object in one pass.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// Progress is blocked until a human acts.
    pub stalled: Vec<Finding>,
    /// The operator (or an agent) is still making changes.
    pub progressing: Vec<Finding>,
    /// Detail conditions beside the kstatus ones (e.g. `ListenerReady`): type, ok, reason, message.
    pub detail: Vec<(String, bool, String, String)>,
}

impl Findings {
    pub fn stall(&mut self, reason: &str, message: impl Into<String>) {
        push_unique(&mut self.stalled, reason, message.into());
    }

    pub fn progress(&mut self, reason: &str, message: impl Into<String>) {
        push_unique(&mut self.progressing, reason, message.into());
    }

    /// A detail condition such as `CertificateReady`.
    pub fn detail(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        self.detail.retain(|(t, ..)| t != type_);
        self.detail.push((type_.to_string(), ok, reason.to_string(), message.into()));
    }

    pub fn is_ready(&self) -> bool {
        self.stalled.is_empty() && self.progressing.is_empty()
    }

    /// The kstatus conditions for these findings.
    pub fn conditions(
        &self,
        ready_message: &str,
        generation: Option<i64>,
        previous: &[Condition],
        now: jiff::Timestamp,
    ) -> Vec<Condition> {
        let ready = if let Some(first) = self.stalled.first().or(self.progressing.first()) {
            ("False", first.reason.clone(), summarize(self.stalled.iter().chain(&self.progressing)))
        } else {
            ("True", "Reconciled".to_string(), ready_message.to_string())
        };
        let reconciling = match self.progressing.first() {
            Some(first) => ("True", first.reason.clone(), summarize(self.progressing.iter())),
            None => ("False", "Reconciled".to_string(), "nothing left to change".to_string()),
        };
        let stalled = match self.stalled.first() {
            Some(first) => ("True", first.reason.clone(), summarize(self.stalled.iter())),
            None => ("False", "NotStalled".to_string(), "no human action needed".to_string()),
        };
        let mut conditions: Vec<Condition> = [(READY, ready), (RECONCILING, reconciling), (STALLED, stalled)]
            .into_iter()
            .map(|(type_, (status, reason, message))| {
                condition(type_, status, reason, message, generation, previous, now)
            })
            .collect();
        for (type_, ok, reason, message) in &self.detail {
            let status = if *ok { "True" } else { "False" };
            conditions.push(condition(type_, status, reason.clone(), message.clone(), generation, previous, now));
        }
        conditions
    }
}

fn push_unique(list: &mut Vec<Finding>, reason: &str, message: String) {
    if !list.iter().any(|f| f.reason == reason && f.message == message) {
        list.push(Finding { reason: reason.to_string(), message });
    }
}

/// Messages joined with `; ` (at most 8, so a pool of hundreds of nodes keeps a readable message).
fn summarize<'a>(findings: impl Iterator<Item = &'a Finding>) -> String {
    let all: Vec<&Finding> = findings.collect();
    let mut text = all.iter().take(8).map(|f| f.message.as_str()).collect::<Vec<_>>().join("; ");
    if all.len() > 8 {
        text.push_str(&format!("; and {} more", all.len() - 8));
    }
    text
}

fn condition(
    type_: &str,
    status: &str,
    reason: String,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: jiff::Timestamp,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_findings_make_ready_false_and_stalled_true() {
        let mut findings = Findings::default();
        findings.stall("ListenerMissing", "create the listener");
        let conditions = findings.conditions("ok", Some(3), &[], jiff::Timestamp::UNIX_EPOCH);
        let by_type = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned().expect("condition present");
        assert_eq!(by_type(READY).status, "False");
        assert_eq!(by_type(READY).reason, "ListenerMissing");
        assert_eq!(by_type(STALLED).status, "True");
        assert_eq!(by_type(RECONCILING).status, "False");
        assert!(conditions.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn unchanged_condition_keeps_its_transition_time() {
        let findings = Findings::default();
        let first = findings.conditions("ok", Some(1), &[], jiff::Timestamp::UNIX_EPOCH);
        let later = jiff::Timestamp::from_second(1_000_000).expect("valid timestamp");
        let second = findings.conditions("ok", Some(1), &first, later);
        assert_eq!(first, second);
    }
}
