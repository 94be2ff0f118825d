//! The simulator's risk level: a deterministic function of the request, so a
//! test can compute what the simulator must have answered for any row.
//!
//! Most participants come out as no risk; values that the "platform" knows to
//! belong to farms (see [`ring_flagged`]) push the level up, which is what
//! `riskbatch gen` plants its rings with.

/// FNV-1a, 64 bit: stable across platforms and versions.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // Separates parts so that ("ab","c") and ("a","bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Whether the simulated platform knows this device / IP / Wi-Fi to belong to a farm.
pub fn ring_flagged(value: &str) -> bool {
    fnv1a(&[b"ring", value.as_bytes()]).is_multiple_of(64)
}

/// The risk level (0–3) for a request. `fields` are the non-empty fields of
/// `sale_risk` / `login_risk` as (name, value), in any order.
pub fn level(api: &str, openid: &str, fields: &[(&str, &str)]) -> u8 {
    let mut sorted: Vec<&(&str, &str)> = fields.iter().collect();
    sorted.sort();
    let mut parts: Vec<&[u8]> = vec![api.as_bytes(), openid.as_bytes()];
    for (name, value) in &sorted {
        parts.push(name.as_bytes());
        parts.push(value.as_bytes());
    }
    let hash = fnv1a(&parts);
    let base = match hash % 100 {
        0..78 => 0,
        78..88 => 1,
        88..95 => 2,
        _ => 3,
    };
    let farm = sorted.iter().any(|(name, value)| {
        matches!(*name, "deviceid" | "clientip" | "wifibssid") && ring_flagged(value)
    });
    if farm {
        base.max(if (hash >> 8) % 10 < 8 { 3 } else { 2 })
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_is_deterministic_and_order_free() {
        let a = level(
            "weopensecriskservice",
            "o1",
            &[("phonenum", "1"), ("deviceid", "d")],
        );
        let b = level(
            "weopensecriskservice",
            "o1",
            &[("deviceid", "d"), ("phonenum", "1")],
        );
        assert_eq!(a, b);
        assert!(a <= 3);
    }

    #[test]
    fn distribution_is_mostly_no_risk() {
        let mut counts = [0u32; 4];
        for i in 0..10_000 {
            counts[level("weopensecriskservice", &format!("o{i}"), &[]) as usize] += 1;
        }
        assert!(
            counts[0] > 7000 && counts[3] > 300 && counts[3] < 800,
            "{counts:?}"
        );
    }

    #[test]
    fn farm_values_are_mostly_high_risk() {
        let farm = (0..)
            .map(|i| format!("dev{i}"))
            .find(|d| ring_flagged(d))
            .unwrap();
        let high = (0..1000)
            .filter(|i| {
                level(
                    "weopensecriskservice",
                    &format!("o{i}"),
                    &[("deviceid", &farm)],
                ) == 3
            })
            .count();
        assert!(high > 750, "{high}");
    }
}
