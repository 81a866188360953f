//! The documented numbers the reference enforces (member cap, storage and collapse-key
//! limits, time to live, payload sizes, ...), taken from a spec profile, and the numbers the
//! documents leave to the server (throttle buckets). The model and each device's queue both
//! read them; neither owns them.

use serde_json::{Map, Value, json};

use super::faults::{Variant, Variants};
use crate::catalog::Profile;

/// The documented numbers the model enforces, taken from a spec profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_members: usize,
    pub max_stored_messages: usize,
    pub max_collapse_keys: usize,
    pub max_ttl_seconds: u64,
    pub default_ttl_seconds: u64,
    pub max_payload_bytes: usize,
    /// The smaller limit for iOS devices, where the profile has one.
    pub max_payload_bytes_ios: Option<usize>,
    pub max_senders: usize,
    pub max_registration_ids: usize,
    pub throttle: Throttle,
    /// Messages the connection server keeps in flight per connection.
    pub max_pending_per_connection: usize,
    /// How long an unregistration may take to propagate ("up to 5 minutes").
    pub unregistration_propagation_seconds: u64,
}

/// A token bucket per application and collapse key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    pub initial_tokens: u64,
    pub grant_tokens: u64,
    /// The declared interval is in whole seconds; kept in milliseconds, the clock's unit, so
    /// that a fault can read it as milliseconds.
    pub grant_interval_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("profile `{profile}` has no usable parameter `{param}`: {why}")]
pub struct LimitsError {
    pub profile: String,
    pub param: String,
    pub why: String,
}

impl Limits {
    /// The limits a variant changes: only numbers the documents leave to the server.
    pub fn with_variants(mut self, variants: &Variants) -> Limits {
        if variants.has(Variant::SmallerThrottleBuckets) {
            self.throttle = Throttle { initial_tokens: 5, grant_tokens: 2, grant_interval_ms: 900_000 };
        }
        if variants.has(Variant::LargerThrottleBuckets) {
            let t = &mut self.throttle;
            t.initial_tokens = t.initial_tokens.saturating_mul(3);
            t.grant_tokens = t.grant_tokens.saturating_mul(2);
            t.grant_interval_ms = (t.grant_interval_ms / 2000).max(1) * 1000;
        }
        self
    }

    /// The limits as the reference keeps them under the generated faults that take a number
    /// one step off (`Faults::delta`, by parameter name).
    pub fn with_faults(mut self, faults: &super::faults::Faults) -> Limits {
        let off = |n: usize, param: &str| n.saturating_add_signed(faults.delta(param) as isize);
        let off64 = |n: u64, param: &str| n.saturating_add_signed(faults.delta(param));
        self.max_members = off(self.max_members, "max_members");
        self.max_stored_messages = off(self.max_stored_messages, "max_stored_messages");
        self.max_collapse_keys = off(self.max_collapse_keys, "max_collapse_keys");
        self.max_ttl_seconds = off64(self.max_ttl_seconds, "max_ttl_seconds");
        self.default_ttl_seconds = off64(self.default_ttl_seconds, "default_ttl_seconds");
        self.max_payload_bytes = off(self.max_payload_bytes, "max_payload_bytes");
        self.max_payload_bytes_ios = self.max_payload_bytes_ios.map(|n| off(n, "max_payload_bytes_ios"));
        self.max_senders = off(self.max_senders, "max_senders");
        self.max_registration_ids = off(self.max_registration_ids, "max_registration_ids");
        self.max_pending_per_connection = off(self.max_pending_per_connection, "max_pending_per_connection");
        let t = &mut self.throttle;
        t.initial_tokens = off64(t.initial_tokens, "throttle_initial_tokens");
        t.grant_tokens = off64(t.grant_tokens, "throttle_grant_tokens");
        let interval = off64(t.grant_interval_ms / 1000, "throttle_grant_interval_seconds");
        let ms = faults.unit("throttle_grant_interval_seconds") == Some(super::faults::WrongUnit::Milliseconds);
        t.grant_interval_ms = if ms { interval } else { interval.saturating_mul(1000) }.max(1);
        self
    }

    /// The numbers the documents leave to the server, by their profile parameter names: the
    /// control API's capabilities declare them so that checks use these, not the reference's.
    pub fn server_chosen(&self) -> Map<String, Value> {
        let t = &self.throttle;
        let mut out = Map::new();
        out.insert("throttle_initial_tokens".into(), json!(t.initial_tokens));
        out.insert("throttle_grant_tokens".into(), json!(t.grant_tokens));
        out.insert("throttle_grant_interval_seconds".into(), json!(t.grant_interval_ms / 1000));
        out
    }

    pub fn from_profile(profile: &Profile) -> Result<Limits, LimitsError> {
        let get = |param: &str| -> Result<Option<u64>, LimitsError> {
            match profile.params.get(param) {
                None => Ok(None),
                Some(v) => v.value.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| LimitsError {
                    profile: profile.name.clone(),
                    param: param.into(),
                    why: "expected a positive integer".into(),
                }),
            }
        };
        let need = |param: &str| -> Result<u64, LimitsError> {
            get(param)?.ok_or_else(|| LimitsError {
                profile: profile.name.clone(),
                param: param.into(),
                why: "missing".into(),
            })
        };
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Limits {
            max_members: size(need("max_members")?),
            max_stored_messages: size(need("max_stored_messages")?),
            max_collapse_keys: size(need("max_collapse_keys")?),
            max_ttl_seconds: need("max_ttl_seconds")?,
            default_ttl_seconds: need("default_ttl_seconds")?,
            max_payload_bytes: size(need("max_payload_bytes")?),
            max_payload_bytes_ios: get("max_payload_bytes_ios")?.map(size),
            max_senders: size(need("max_senders")?),
            max_registration_ids: size(need("max_registration_ids")?),
            max_pending_per_connection: size(need("max_pending_per_connection")?),
            unregistration_propagation_seconds: need("unregistration_propagation_seconds")?,
            throttle: Throttle {
                initial_tokens: need("throttle_initial_tokens")?,
                grant_tokens: need("throttle_grant_tokens")?,
                grant_interval_ms: need("throttle_grant_interval_seconds")?.saturating_mul(1000),
            },
        })
    }
}
