use super::*;

fn sim_with(config: SimConfig) -> (Sim, String) {
    let sim = Sim::new(config);
    let token = sim.tokens.lock().unwrap().stable(Instant::now(), false).0;
    (sim, token)
}

fn sim() -> (Sim, String) {
    sim_with(SimConfig::default())
}

fn codes(outcome: &Outcome) -> (i64, Option<i64>) {
    match outcome {
        Outcome::Reply { errcode, inner, .. } => (*errcode, *inner),
        other => panic!("not a reply: {other:?}"),
    }
}

fn ask_raw(sim: &Sim, token: &str, body: &[u8], at: Instant) -> Outcome {
    answer(sim, "/wxa/servicemarket", Some(token), body, at, 1, None)
}

fn ask(sim: &Sim, token: &str, body: Value) -> (i64, Option<i64>, Value) {
    let outcome = ask_raw(sim, token, body.to_string().as_bytes(), Instant::now());
    let (errcode, code) = codes(&outcome);
    let Outcome::Reply { body, .. } = outcome else {
        unreachable!()
    };
    (errcode, code, serde_json::from_str(&body).unwrap())
}

fn body(api: &str, data: Value) -> Value {
    json!({"service": SERVICE, "api": api, "data": data, "client_msg_id": "m"})
}

fn marketing(openid: &str) -> Value {
    body(
        "weopensecriskservice",
        json!({"openid": openid, "serviceid": 3, "sale_risk": {}}),
    )
}

#[test]
fn validates_requests_like_wechat() {
    let (sim, token) = sim();
    let good = json!({"openid": "o1", "serviceid": 3, "sale_risk": {"deviceid": "d"}});
    let (errcode, code, reply) = ask(&sim, &token, body("weopensecriskservice", good.clone()));
    assert_eq!((errcode, code), (0, Some(0)));
    let inner: Value = serde_json::from_str(reply["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        inner["data"]["risklevel"],
        level("weopensecriskservice", "o1", &[("deviceid", "d")])
    );
    assert!(reply["request_id"].as_str().unwrap().starts_with("sim-"));

    let cases = [
        (
            json!({"service": "wx000", "api": "weopensecriskservice", "data": good}),
            9301001,
            None,
        ),
        (body("nosuchapi", good.clone()), 9301001, None),
        (
            body("weopensecriskservice", Value::String(good.to_string())),
            9301003,
            None,
        ),
        (body("weopensecuseracctrisklevel", good.clone()), 0, Some(9)),
        (
            body(
                "weopensecriskservice",
                json!({"openid": "o1", "serviceid": 3}),
            ),
            0,
            Some(1),
        ),
        (
            body(
                "weopensecriskservice",
                json!({"serviceid": 3, "sale_risk": {}}),
            ),
            0,
            Some(1),
        ),
        (
            body(
                "weopensecriskservice",
                json!({"openid": "o1", "serviceid": 3, "sale_risk": {"phonenum": null}}),
            ),
            0,
            Some(1),
        ),
    ];
    for (request, errcode, code) in cases {
        let (got_errcode, got_code, _) = ask(&sim, &token, request.clone());
        assert_eq!((got_errcode, got_code), (errcode, code), "{request}");
    }
    let (errcode, _, _) = ask(&sim, "not-a-token", body("weopensecriskservice", good));
    assert_eq!(errcode, 40001);
    let outcome = ask_raw(&sim, &token, b"{not json", Instant::now());
    assert_eq!(codes(&outcome).0, 47001);
    let later = Instant::now() + Duration::from_secs(8000);
    assert_eq!(codes(&ask_raw(&sim, &token, b"{}", later)).0, 42001);
}

#[test]
fn rate_limit_counts_arrivals_in_a_sliding_second() {
    let (mut sim, _) = sim();
    sim.config.rate_limit = Some(3);
    let now = Instant::now();
    let limited: Vec<bool> = (0..5)
        .map(|_| sim.arrive("/wxa/servicemarket", now))
        .collect();
    assert_eq!(limited, [false, false, false, true, true]);
    assert!(!sim.arrive("/wxa/servicemarket", now + Duration::from_millis(1001)));
    assert_eq!(sim.stats.lock().unwrap().max_in_1s, 5);
}

#[test]
fn openid_prefixes_choose_the_answer() {
    let (sim, token) = sim();
    let cases = [
        ("errcode61010_a", (61010, None)),
        ("errcode-1_a", (-1, None)),
        ("errcode48001_a", (48001, None)),
        ("code2_a", (0, Some(2))),
        ("code12_a", (0, Some(12))),
        ("errcode_nonumber", (0, Some(0))),
        ("ocode2_a", (0, Some(0))),
    ];
    for (openid, expected) in cases {
        let (errcode, code, _) = ask(&sim, &token, marketing(openid));
        assert_eq!((errcode, code), expected, "{openid}");
    }
}

#[test]
fn quota_and_balance_run_out() {
    let (sim, token) = sim_with(SimConfig {
        daily_quota: Some(3),
        balance: Some(2),
        ..SimConfig::default()
    });
    let answers: Vec<_> = (0..4)
        .map(|i| {
            let (errcode, code, _) = ask(&sim, &token, marketing(&format!("o{i}")));
            (errcode, code)
        })
        .collect();
    assert_eq!(
        answers,
        [(0, Some(0)), (0, Some(0)), (0, Some(13)), (45009, None)]
    );
}

#[test]
fn faults_come_at_their_rates() {
    let config = SimConfig {
        faults: 0.1,
        seed: 7,
        ..SimConfig::default()
    };
    let rates = config.fault_rates();
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    let mut slow = 0;
    for n in 0..100_000 {
        let kind = match choose_fault(&rates, config.seed, n) {
            None => "none",
            Some(Fault::Busy) => "busy",
            Some(Fault::InnerError(_)) => "inner",
            Some(Fault::HttpError(_)) => "http",
            Some(Fault::Drop) => "drop",
            Some(Fault::Malformed) => "malformed",
        };
        *seen.entry(kind).or_default() += 1;
        if draw(config.seed, n, "slow") < rates.slow {
            slow += 1;
        }
    }
    for kind in ["busy", "inner", "http", "drop", "malformed"] {
        let count = seen[kind];
        assert!((9_000..11_000).contains(&count), "{kind}: {count}");
    }
    assert!((9_000..11_000).contains(&slow), "slow: {slow}");
}

#[test]
fn expired_tokens_fail_requests_in_flight() {
    let (sim, token) = sim_with(SimConfig {
        expire_tokens_after: Some(1),
        expired_token_errcode: 40014,
        ..SimConfig::default()
    });
    sim.arrive("/wxa/servicemarket", Instant::now());
    let (errcode, _, _) = ask(&sim, &token, marketing("o1"));
    assert_eq!(errcode, 40014);
    let fresh = sim.tokens.lock().unwrap().stable(Instant::now(), false).0;
    assert_ne!(fresh, token);
    assert_eq!(ask(&sim, &fresh, marketing("o1")).0, 0);
}
