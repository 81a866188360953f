//! What a send itself must be: its time to live, its target fields, the size and keys of its
//! data; and how many collapse keys it gives a device.

use serde::{Deserialize, Serialize};

use super::Config;
use crate::verdicts::events::{Event, Sent, Ttl};
use crate::verdicts::{Bounded, Numbers, RuleLog};

/// The graders that judge each send alone.
pub(super) fn feed(config: &Config, n: &Numbers, event: &Event, log: &mut RuleLog) {
    let Event::Sent(s) = event else { return };
    let seq = &[s.seq];
    match config {
        Config::TtlRange => {
            let Some(ttl) = &s.ttl else { return };
            log.exercised += 1;
            match ttl {
                Ttl::Whole(t) if (0..=n.max_ttl_seconds as i64).contains(t) => {}
                Ttl::Whole(t) => log.violate(s.stamp, seq, || {
                    format!("#{} asked for time_to_live {t}: outside 0 to {} seconds", s.seq, n.max_ttl_seconds)
                }),
                // A whole number too large to hold exactly (1e20) is out of range, not a fraction.
                Ttl::Other(text) if text.parse::<f64>().is_ok_and(|f| f.fract() == 0.0) => {
                    log.violate(s.stamp, seq, || {
                        format!("#{} asked for time_to_live {text}: outside 0 to {} seconds", s.seq, n.max_ttl_seconds)
                    })
                }
                Ttl::Other(text) => log.violate(s.stamp, seq, || {
                    format!("#{} asked for time_to_live {text}: not a whole number of seconds", s.seq)
                }),
            }
        }
        Config::TargetExclusive => {
            if s.xmpp() || s.path == crate::catalog::Path::PlainText {
                return;
            }
            log.exercised += 1;
            if s.to_given && s.ids_given {
                log.violate(s.stamp, seq, || format!("#{} named both `to` and `registration_ids`", s.seq));
            }
        }
        Config::IdCount => {
            if !s.ids_given || s.xmpp() {
                return;
            }
            log.exercised += 1;
            let strings = s.ids.as_ref().map_or(0, Vec::len);
            match s.ids_len {
                None => {
                    log.violate(s.stamp, seq, || format!("#{} gave registration_ids that is not a JSON array", s.seq))
                }
                Some(len) if strings < len => log.violate(s.stamp, seq, || {
                    format!("#{} listed {} registration_ids that are not strings (ids)", s.seq, len - strings)
                }),
                Some(len) if len == 0 || len > n.max_registration_ids => log.violate(s.stamp, seq, || {
                    format!("#{} listed {len} registration_ids: the range is 1 to {}", s.seq, n.max_registration_ids)
                }),
                Some(_) => {}
            }
        }
        Config::PayloadSize => payload(s, n, log),
        Config::ReservedKeys => {
            if s.payload_bytes == 0 && s.reserved.is_empty() {
                return;
            }
            log.exercised += 1;
            if !s.reserved.is_empty() {
                log.violate(s.stamp, seq, || format!("#{} used reserved data key(s) {}", s.seq, s.reserved.join(", ")));
            }
        }
        _ => {}
    }
}

fn payload(s: &Sent, n: &Numbers, log: &mut RuleLog) {
    if s.payload_bytes == 0 {
        return;
    }
    log.exercised += 1;
    if s.payload_bytes > n.max_payload_bytes {
        log.violate(s.stamp, &[s.seq], || {
            format!("#{} carried {} bytes of data: the limit is {}", s.seq, s.payload_bytes, n.max_payload_bytes)
        });
        return;
    }
    let Some(ios) = n.max_payload_bytes_ios.filter(|limit| s.payload_bytes > *limit) else { return };
    if let Some(device) = s.facts.devices.iter().find(|d| d.ios) {
        log.violate(s.stamp, &[s.seq], || {
            format!(
                "#{} carried {} bytes of data to the iOS device {}: the limit there is {ios}",
                s.seq, s.payload_bytes, device.id
            )
        });
    }
}

/// Collapse keys per device. `held`: as the server holds them (the MUST); otherwise among
/// the app server's unexpired messages (the SHOULD), leaving to the MUST what it reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CollapseKeys {
    /// Device -> its keys with when their newest message expires (sender clock, ms).
    live: Bounded<Vec<(String, u64)>>,
}

impl CollapseKeys {
    pub fn feed(&mut self, held: bool, n: &Numbers, event: &Event, log: &mut RuleLog) {
        let Event::Sent(s) = event else { return };
        let Some(key) = s.collapse_key.as_deref() else { return };
        let ttl_ms = s.ttl_ms(n.default_ttl_seconds);
        // A message with time_to_live 0 is never stored: it holds no key anywhere.
        if ttl_ms == 0 || s.dry_run || s.facts.devices.is_empty() {
            return;
        }
        log.exercised += 1;
        let max = n.max_collapse_keys;
        let mut over = Vec::new();
        for d in &s.facts.devices {
            let must = d.held_keys.is_some_and(|h| h >= max) && !d.holds_key;
            if held {
                if must {
                    over.push(format!("{} (it held {} other keys)", d.id, d.held_keys.unwrap_or(0)));
                }
                continue;
            }
            let now = s.stamp.at_ms;
            let keys = self.live.entry_or(&d.id, Vec::new);
            keys.retain(|(_, until)| *until > now);
            let fresh = !keys.iter().any(|(k, _)| k == key);
            if fresh && keys.len() >= max && !must {
                let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
                over.push(format!("{} (its messages with keys {} had not expired)", d.id, names.join(", ")));
            }
            keys.retain(|(k, _)| k != key);
            keys.push((key.to_string(), now.saturating_add(ttl_ms)));
            // More than the limit is never needed to judge the next send.
            if keys.len() > max + 1 {
                keys.remove(0);
            }
        }
        if !over.is_empty() {
            log.violate(s.stamp, &[s.seq], || {
                format!("#{} gave collapse key {key:?} to a device past the limit of {max}: {}", s.seq, over.join("; "))
            });
        }
    }

    pub fn note(&self) -> Option<String> {
        self.live.forgot_note("devices")
    }
}
