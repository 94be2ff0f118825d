//! `POST /wxa/getuserriskrank` (wechat-api.md §4): the newer risk API, with a
//! deterministic `risk_rank` 0–4 and the errcodes an openid asks for
//! (`errcode40129_…`, `errcode43104_…`, `errcode9410009_…`).

use serde::Deserialize;

use super::{
    Fault, Outcome, Sim, fault_outcome, fnv1a, outcome_error, requested_answer,
    requested_http_status,
};

pub const PATH: &str = "/wxa/getuserriskrank";

#[derive(Deserialize)]
struct RankBody {
    appid: Option<String>,
    openid: Option<String>,
    scene: Option<i64>,
    client_ip: Option<String>,
    mobile_no: Option<String>,
    email_address: Option<String>,
}

/// The answer to one rank request whose token was accepted.
pub(super) fn answer(sim: &Sim, body: &[u8], n: u64, fault: Option<Fault>) -> Outcome {
    let Ok(body) = serde_json::from_slice::<RankBody>(body) else {
        return outcome_error(47001, "data format error");
    };
    let (Some(openid), Some(client_ip)) = (
        body.openid.filter(|o| !o.is_empty()),
        body.client_ip.filter(|ip| !ip.is_empty()),
    ) else {
        return outcome_error(44002, "invalid args: openid and client_ip are required");
    };
    if body.appid.as_deref().is_none_or(str::is_empty) {
        return outcome_error(41002, "appid missing");
    }
    if !matches!(body.scene, Some(0 | 1)) {
        return outcome_error(40129, "invalid scene");
    }
    count(
        sim,
        &openid,
        &client_ip,
        &body.mobile_no,
        &body.email_address,
        body.scene,
    );
    if let Some(fault) = fault {
        // The rank API has no inner codes: its internal errors are -1.
        let fault = match fault {
            Fault::InnerError(_) => Fault::Busy,
            other => other,
        };
        return fault_outcome(sim, fault, n);
    }
    if let Some(status) = requested_http_status(&openid) {
        return Outcome::HttpError(status);
    }
    if let Some((true, errcode)) = requested_answer(&openid)
        && errcode != 0
    {
        return outcome_error(errcode, &format!("sim: errcode {errcode} for this openid"));
    }
    let rank = rank(&openid, &client_ip, body.scene.unwrap_or(1));
    Outcome::Reply {
        body: format!(
            r#"{{"errcode":0,"errmsg":"getuserriskrank succ","risk_rank":{rank},"unoin_id":{}}}"#,
            100_000 + n
        ),
        errcode: 0,
        inner: None,
    }
}

/// The rank of a request: mostly 0, a few of each higher rank.
pub fn rank(openid: &str, client_ip: &str, scene: i64) -> u8 {
    let hash = fnv1a(&[
        b"rank",
        openid.as_bytes(),
        client_ip.as_bytes(),
        &scene.to_le_bytes(),
    ]);
    match hash % 100 {
        0..70 => 0,
        70..82 => 1,
        82..91 => 2,
        91..97 => 3,
        _ => 4,
    }
}

fn count(
    sim: &Sim,
    openid: &str,
    client_ip: &str,
    mobile: &Option<String>,
    email: &Option<String>,
    scene: Option<i64>,
) {
    let key = fnv1a(&[
        PATH.as_bytes(),
        openid.as_bytes(),
        client_ip.as_bytes(),
        mobile.as_deref().unwrap_or("").as_bytes(),
        email.as_deref().unwrap_or("").as_bytes(),
        &scene.unwrap_or(-1).to_le_bytes(),
    ]);
    let mut stats = sim.lock_stats();
    *stats
        .by_api
        .entry("getuserriskrank".to_string())
        .or_default() += 1;
    *stats.per_request.entry(key).or_default() += 1;
    *stats.per_openid.entry(openid.to_string()).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_occurs_and_is_deterministic() {
        let mut seen = [0u32; 5];
        for i in 0..2000 {
            let r = rank(&format!("o{i}"), "1.2.3.4", 1);
            assert_eq!(r, rank(&format!("o{i}"), "1.2.3.4", 1));
            seen[r as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 20), "{seen:?}");
    }
}
