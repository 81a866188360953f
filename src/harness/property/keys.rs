//! `notification-keys-unguessable`: sample keys are distinct and carry enough random bits.

use std::collections::BTreeSet;

use serde_json::json;

use super::{PropertyCx, exchange, server_request};

pub(super) fn keys_unguessable(cx: &PropertyCx<'_>) -> Result<(), String> {
    let samples = cx.param("samples")?.max(2) as usize;
    let min_bits = cx.param("min_bits")? as f64;
    let control = cx.control();
    let sender = control.new_sender().map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for i in 0..samples {
        let id = control.register(std::slice::from_ref(&sender.id), None, None, None).map_err(|e| e.to_string())?;
        let body = json!({"operation": "create", "notification_key_name": format!("keys-{}-{i}", cx.run_id), "registration_ids": [id]});
        let (req, resp) = exchange(cx, server_request("POST", "/gcm/notification", &sender).with_json(&body))?;
        match resp.body_json().and_then(|b| b["notification_key"].as_str().map(str::to_string)) {
            Some(k) if resp.status == 200 => keys.push(k),
            _ => {
                return Err(format!(
                    "creating sample group {i} failed\n{}",
                    crate::harness::expect::describe(&req, &resp)
                ));
            }
        }
    }
    let distinct: BTreeSet<&String> = keys.iter().collect();
    if distinct.len() != keys.len() {
        return Err(format!("{} groups got only {} distinct notification keys", keys.len(), distinct.len()));
    }
    let bits = estimated_bits(&keys);
    if bits < min_bits {
        return Err(format!(
            "notification keys vary too little to hold {min_bits} random bits (estimated at most {bits:.0} bits from {samples} samples), e.g.\n  {}\n  {}",
            keys[0],
            keys[keys.len() - 1]
        ));
    }
    Ok(())
}

/// An upper bound on the random bits in a set of keys: positions that vary across samples,
/// times the bits per character of the alphabet seen there. Keys from a counter vary in a
/// few positions only; random keys vary in all of them.
pub fn estimated_bits(keys: &[String]) -> f64 {
    let chars: Vec<Vec<char>> = keys.iter().map(|k| k.chars().collect()).collect();
    let len = chars.iter().map(Vec::len).min().unwrap_or(0);
    let mut varying = 0usize;
    let mut alphabet = BTreeSet::new();
    for pos in 0..len {
        let at: BTreeSet<char> = chars.iter().map(|c| c[pos]).collect();
        if at.len() > 1 {
            varying += 1;
            alphabet.extend(at);
        }
    }
    if alphabet.len() < 2 {
        return 0.0;
    }
    varying as f64 * (alphabet.len() as f64).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_carry_few_bits_and_random_keys_many() {
        let counter: Vec<String> = (0..16).map(|i| format!("APA91b{i:043}")).collect();
        assert!(estimated_bits(&counter) < 16.0);
        let hexish: Vec<String> = (0u64..16)
            .map(|i| {
                format!(
                    "{:016x}{:016x}",
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ 0xdead_beef
                )
            })
            .collect();
        assert!(estimated_bits(&hexish) >= 120.0, "{}", estimated_bits(&hexish));
    }
}
