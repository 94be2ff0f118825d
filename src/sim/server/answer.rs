//! The answer to one risk request: the token first, then the request as
//! WeChat's servicemarket reads it (or the rank API's, `rank.rs`), the
//! injected faults, quotas and the answers an openid asks for.

use super::*;

#[derive(Deserialize)]
struct RiskBody<'a> {
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow)]
    api: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// `data` as the risk service reads it; a value of the wrong type anywhere
/// inside is the service's parameter error (inner code 1).
#[derive(Deserialize)]
struct RiskData<'a> {
    #[serde(borrow)]
    openid: Option<Cow<'a, str>>,
    serviceid: Option<i64>,
    #[serde(borrow)]
    sale_risk: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(borrow)]
    login_risk: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(borrow)]
    user_access_token: Option<Cow<'a, str>>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn answer(
    sim: &Sim,
    path: &str,
    access_token: Option<&str>,
    body: &[u8],
    now: Instant,
    n: u64,
    fault: Option<Fault>,
) -> Outcome {
    if let Some(after) = sim.config.expire_tokens_after {
        let mut stats = sim.lock_stats();
        if !stats.tokens_revoked && stats.risk_requests >= after {
            stats.tokens_revoked = true;
            *stats.faults.entry("tokens_expired").or_default() += 1;
            drop(stats);
            sim.tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .revoke_all();
        }
    }
    let Some(access_token) = access_token.filter(|t| !t.is_empty()) else {
        return outcome_error(41001, "access_token missing");
    };
    let checked = sim
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(access_token, now);
    match checked {
        Err(Rejection::Invalid) => {
            return outcome_error(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        Err(Rejection::Expired) => return outcome_error(42001, "access_token expired"),
        Err(Rejection::Revoked) => {
            let errcode = sim.config.expired_token_errcode;
            let errmsg = match errcode {
                42001 => "access_token expired",
                40014 => "invalid access_token",
                _ => "invalid credential, access_token is invalid or not latest",
            };
            return outcome_error(errcode, errmsg);
        }
        Ok(()) => {}
    }
    if path == rank::PATH {
        return rank::answer(sim, body, n, fault);
    }
    let Ok(body) = serde_json::from_slice::<RiskBody<'_>>(body) else {
        return outcome_error(47001, "data format error");
    };
    if body.service.as_deref() != Some(SERVICE) {
        return outcome_error(9301001, "invalid service");
    }
    let scene = match body.api.as_deref() {
        Some(api) if api == Scene::Marketing.api() => Scene::Marketing,
        Some(api) if api == Scene::Account.api() => Scene::Account,
        _ => return outcome_error(9301001, "invalid api"),
    };
    let raw = body.data.map(|d| d.get().trim_start()).unwrap_or("");
    if raw.starts_with('"') {
        // The seed's table calls data a string; sent as one it fails like this.
        return outcome_error(9301003, "service internal error");
    }
    if !raw.starts_with('{') {
        return outcome_error(47001, "data format error");
    }
    let Ok(data) = serde_json::from_str::<RiskData>(raw) else {
        return inner_reply(n, 1, "data 内参数错误", None);
    };
    let Some(openid) = data.openid.filter(|o| !o.is_empty()) else {
        return inner_reply(n, 1, "data 内参数错误: openid", None);
    };
    if data.serviceid != Some(i64::from(scene.serviceid())) {
        return inner_reply(n, 9, "serviceid 参数错误", None);
    }
    let object = match scene {
        Scene::Marketing => data.sale_risk,
        Scene::Account => data.login_risk,
        Scene::Rank(_) => None,
    };
    let Some(object) = object else {
        return inner_reply(
            n,
            1,
            &format!("data 内参数错误: {} 不可省略", scene.object()),
            None,
        );
    };
    if let Some(name) = object
        .keys()
        .find(|k| !RISK_OBJECT_FIELDS.contains(&k.as_ref()))
    {
        return inner_reply(n, 1, &format!("data 内参数错误: {name}"), None);
    }
    let fields: Vec<(&str, &str)> = object
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    {
        let mut parts: Vec<&[u8]> = vec![scene.api().as_bytes(), openid.as_bytes()];
        for (name, value) in &fields {
            parts.push(name.as_bytes());
            parts.push(value.as_bytes());
        }
        parts.push(data.user_access_token.as_deref().unwrap_or("").as_bytes());
        let key = fnv1a(&parts);
        let mut stats = sim.lock_stats();
        match stats.by_api.get_mut(scene.api()) {
            Some(count) => *count += 1,
            None => {
                stats.by_api.insert(scene.api().to_string(), 1);
            }
        }
        *stats.per_request.entry(key).or_default() += 1;
        match stats.per_openid.get_mut(openid.as_ref()) {
            Some(count) => *count += 1,
            None => {
                stats.per_openid.insert(openid.to_string(), 1);
            }
        }
    }
    if let Some(fault) = fault {
        return fault_outcome(sim, fault, n);
    }
    if let Some(quota) = sim.config.daily_quota {
        let mut stats = sim.lock_stats();
        if stats.quota_used >= quota {
            return outcome_error(45009, "reach max api daily quota limit");
        }
        stats.quota_used += 1;
    }
    if let Some(status) = requested_http_status(&openid) {
        return Outcome::HttpError(status);
    }
    match requested_answer(&openid) {
        Some((true, errcode)) if errcode != 0 => {
            return outcome_error(errcode, &format!("sim: errcode {errcode} for this openid"));
        }
        Some((false, code)) if code != 0 => {
            return inner_reply(n, code, &format!("sim: code {code} for this openid"), None);
        }
        _ => {}
    }
    {
        let mut stats = sim.lock_stats();
        match &mut stats.balance_left {
            Some(0) => return inner_reply(n, 13, "余额不足", None),
            Some(left) => *left -= 1,
            None => {}
        }
    }
    inner_reply(n, 0, "请求成功", Some(level(scene.api(), &openid, &fields)))
}
