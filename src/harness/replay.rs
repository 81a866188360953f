//! Replay files: a failed check as data (schema `gcmspec-replay/1`, docs/report.md), so it
//! can be run again, against the same server or another, without the spec files.
//!
//! A replay holds the check's [`Plan`] (a scenario's exact steps, or a property's shrunk
//! sequence) with the parameters it ran with, and the exchanges the failing run made, which
//! [`super::evidence::curl_script`] turns into curl commands.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::evidence::{Evidence, Exchange};
use super::{CheckRun, Execution, Options, Plan, execute, property};
use crate::catalog::{self, Check, Level, Rule, Run};
use crate::driver::{Capabilities, Target};

pub const SCHEMA: &str = "gcmspec-replay/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replay {
    pub schema: String,
    /// The trial: `rule::check`, `rule::check@xmpp`.
    pub name: String,
    pub rule: String,
    pub check: String,
    pub level: Level,
    pub title: String,
    pub profile: String,
    /// `http` or `xmpp`: how the check's sends went (what replay files before paths said).
    pub transport: String,
    /// The trial: the paths its generic steps took. Absent in files written before paths:
    /// read from `transport`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    /// What the target must offer (control-API capabilities, `xmpp`) to run it.
    #[serde(default)]
    pub needs: Vec<String>,
    /// The server it failed against.
    pub target: String,
    /// Seeds a property that has no single sequence to replay.
    pub seed: u64,
    /// Run with --strict: only documented outcomes are accepted.
    #[serde(default)]
    pub strict: bool,
    pub failure: String,
    /// The profile's and rule's parameters, as the check saw them.
    pub params: serde_json::Map<String, Value>,
    pub plan: Plan,
    /// What the failing run sent and received, in order.
    pub exchanges: Vec<Exchange>,
}

impl Replay {
    pub fn new(
        rule: &Rule,
        check: &Check,
        execution: &Execution<'_>,
        plan: &Plan,
        failure: &str,
        evidence: &Evidence,
    ) -> Replay {
        let mut plan = plan.clone();
        if let Plan::Property { sequence, .. } = &mut plan {
            *sequence = evidence.sequence.clone();
        }
        Replay {
            schema: SCHEMA.into(),
            name: super::trial_name(&rule.id, &check.name, execution.run),
            rule: rule.id.clone(),
            check: check.name.clone(),
            level: rule.level,
            title: rule.title.clone(),
            profile: execution.options.profile.clone(),
            transport: if execution.run.delivery.is_xmpp() { "xmpp" } else { "http" }.into(),
            run: Some(execution.run.clone()),
            needs: super::needs_of(check, execution.run),
            target: execution.target.describe(),
            seed: execution.options.seed,
            strict: execution.options.strict,
            failure: failure.to_string(),
            params: execution.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            plan,
            exchanges: evidence.exchanges.clone(),
        }
    }

    /// The file this replay is saved as in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        // `rule::check@xmpp` -> `rule__check@xmpp.json`, the snapshots' naming.
        let safe: String = self
            .name
            .replace("::", "__")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' })
            .collect();
        dir.join(format!("{safe}.json"))
    }

    pub fn read(path: &Path) -> Result<Replay, ReplayError> {
        let text = std::fs::read_to_string(path).map_err(|e| ReplayError::Read(path.to_path_buf(), e))?;
        let replay: Replay =
            serde_json::from_str(&text).map_err(|e| ReplayError::Parse(path.to_path_buf(), e.to_string()))?;
        if replay.schema != SCHEMA {
            return Err(ReplayError::Schema(path.to_path_buf(), replay.schema));
        }
        Ok(replay)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a replay is plain data")
    }

    /// Why `caps` cannot run this replay, if they cannot.
    pub fn unsupported(&self, caps: &Capabilities) -> Option<String> {
        super::missing(caps, &self.needs)
    }

    /// Runs the plan again against `target`, with fresh senders and devices.
    pub fn run(&self, target: &dyn Target, caps: &Capabilities, options: &Options) -> CheckRun {
        let mut options = options.clone();
        options.profile = self.profile.clone();
        options.seed = self.seed;
        options.strict = self.strict;
        // A replay checks behaviour; the snapshot is reviewed in the run that made it.
        options.snapshots = None;
        let run = self.run.clone().unwrap_or_else(|| {
            let delivery = if self.transport == "xmpp" { catalog::Path::Xmpp } else { catalog::Path::Token };
            Run { delivery, ..Run::plain() }
        });
        let execution = Execution {
            target,
            caps,
            options: &options,
            run: &run,
            params: self.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            name: format!("appUser-Chris-replay-{}", options.run_id),
            snapshot: None,
            mode: property::Mode::Search,
            meaning: false,
        };
        execute(&self.plan, &execution)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} is not a replay file: {1}")]
    Parse(PathBuf, String),
    #[error("{0}: schema {1:?}, expected {SCHEMA:?}")]
    Schema(PathBuf, String),
}
