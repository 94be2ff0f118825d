//! A faithful local stand-in for the WeChat endpoints riskbatch uses (SPEC §7):
//! `riskbatch sim`, and `base_url = "sim"` in a job (started in-process on a
//! random loopback port). Reply shapes and request validation follow
//! wechat-api.md; the risk level is a deterministic function of the request.

pub mod push;
pub mod risk;
mod server;
mod tokens;

use std::time::Duration;

use serde::Deserialize;

pub use server::{SimHandle, SimStats, start};

/// How the simulator behaves. The same settings are `riskbatch sim` options
/// and the `[sim]` table of a job file.
///
/// Besides the settings, an openid chooses its own answer: `errcode<N>_…`
/// (e.g. `errcode61010_abc`, `errcode-1_abc`) answers outer errcode N and
/// `code<N>_…` (e.g. `code12_abc`) inner code N, on every request.
#[derive(Debug, Clone, PartialEq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Fixed latency added to every risk answer.
    #[arg(long, value_parser = crate::duration::arg, default_value = "0ms")]
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub latency: Duration,

    /// Random extra latency, uniform between 0 and this.
    #[arg(long, value_parser = crate::duration::arg, default_value = "0ms")]
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub latency_spread: Duration,

    /// Requests per second over a sliding 1 s window; beyond it the answer is 45011.
    #[arg(long)]
    pub rate_limit: Option<u32>,

    /// Risk calls allowed per day; beyond it the answer is 45009 (POST /_sim/new_day resets).
    #[arg(long)]
    pub daily_quota: Option<u64>,

    /// Paid answers available; once spent the answer is inner code 13 (POST /_sim/top_up?calls=N adds).
    #[arg(long)]
    pub balance: Option<u64>,

    /// Lifetime of an access token.
    #[arg(long, value_parser = crate::duration::arg, default_value = "7200s")]
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub token_ttl: Duration,

    /// How long a replaced token keeps working (WeChat: 5 minutes).
    #[arg(long, value_parser = crate::duration::arg, default_value = "300s")]
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub token_grace: Duration,

    /// Invalidate every token issued so far once this many risk requests have arrived
    /// (as when another process forces a refresh or a token expires early).
    #[arg(long)]
    pub expire_tokens_after: Option<u64>,

    /// What a token invalidated by `expire_tokens_after` answers: 40001, 40014 or 42001.
    #[arg(long, default_value_t = 42001)]
    pub expired_token_errcode: i64,

    /// Every transient fault below at this rate (0–1), unless its own rate is set.
    #[arg(long, default_value_t = 0.0)]
    pub faults: f64,

    /// Rate of errcode -1 (system busy).
    #[arg(long)]
    pub busy_rate: Option<f64>,

    /// Rate of inner codes 4–8 and 10 (internal service errors).
    #[arg(long)]
    pub inner_error_rate: Option<f64>,

    /// Rate of HTTP 502/503 answers.
    #[arg(long)]
    pub http_error_rate: Option<f64>,

    /// Rate of connections dropped before the answer completes.
    #[arg(long)]
    pub drop_rate: Option<f64>,

    /// Rate of bodies that are not WeChat's JSON (truncated JSON, an HTML error page).
    #[arg(long)]
    pub malformed_rate: Option<f64>,

    /// Rate of answers delayed by `slow_delay` (longer than a client's timeout).
    #[arg(long)]
    pub slow_rate: Option<f64>,

    /// How late a slow answer is.
    #[arg(long, value_parser = crate::duration::arg, default_value = "30s")]
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub slow_delay: Duration,

    /// The appid the token endpoints accept (any non-empty appid if unset).
    #[arg(long)]
    pub appid: Option<String>,

    /// The secret the token endpoints accept (any non-empty secret if unset).
    #[arg(long)]
    pub secret: Option<String>,

    /// Seed for the simulator's random choices (latency spread, faults).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            latency: Duration::ZERO,
            latency_spread: Duration::ZERO,
            rate_limit: None,
            daily_quota: None,
            balance: None,
            token_ttl: Duration::from_secs(7200),
            token_grace: Duration::from_secs(300),
            expire_tokens_after: None,
            expired_token_errcode: 42001,
            faults: 0.0,
            busy_rate: None,
            inner_error_rate: None,
            http_error_rate: None,
            drop_rate: None,
            malformed_rate: None,
            slow_rate: None,
            slow_delay: Duration::from_secs(30),
            appid: None,
            secret: None,
            seed: 1,
        }
    }
}

/// The transient faults, each with its effective rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRates {
    pub busy: f64,
    pub inner_error: f64,
    pub http_error: f64,
    pub drop: f64,
    pub malformed: f64,
    pub slow: f64,
}

impl SimConfig {
    pub fn fault_rates(&self) -> FaultRates {
        let rate = |own: Option<f64>| own.unwrap_or(self.faults);
        FaultRates {
            busy: rate(self.busy_rate),
            inner_error: rate(self.inner_error_rate),
            http_error: rate(self.http_error_rate),
            drop: rate(self.drop_rate),
            malformed: rate(self.malformed_rate),
            slow: rate(self.slow_rate),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.rate_limit == Some(0) {
            return Err("rate_limit must be at least 1".into());
        }
        if self.token_ttl < Duration::from_secs(1) {
            return Err("token_ttl must be at least 1s".into());
        }
        if ![40001, 40014, 42001].contains(&self.expired_token_errcode) {
            return Err("expired_token_errcode must be 40001, 40014 or 42001".into());
        }
        let rates = [
            ("faults", Some(self.faults)),
            ("busy_rate", self.busy_rate),
            ("inner_error_rate", self.inner_error_rate),
            ("http_error_rate", self.http_error_rate),
            ("drop_rate", self.drop_rate),
            ("malformed_rate", self.malformed_rate),
            ("slow_rate", self.slow_rate),
        ];
        for (name, rate) in rates {
            if let Some(rate) = rate
                && !(0.0..=1.0).contains(&rate)
            {
                return Err(format!("{name} must be between 0 and 1, not {rate}"));
            }
        }
        let r = self.fault_rates();
        // One draw decides the answer's fault, so the answer-changing rates share [0, 1).
        let total = r.busy + r.inner_error + r.http_error + r.drop + r.malformed;
        if total > 1.0 {
            return Err(format!(
                "the fault rates add up to {total}; busy, inner_error, http_error, drop and malformed together must be at most 1"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimConfig,
    }

    #[test]
    fn clap_and_toml_defaults_agree() {
        let from_flags = Cli::parse_from(["sim"]).sim;
        let from_toml: SimConfig = toml::from_str("").unwrap();
        assert_eq!(from_flags, SimConfig::default());
        assert_eq!(from_toml, SimConfig::default());
        let custom: SimConfig = toml::from_str("latency = \"50ms\"\nrate_limit = 100").unwrap();
        assert_eq!(custom.latency, Duration::from_millis(50));
        assert_eq!(custom.rate_limit, Some(100));
        assert!(toml::from_str::<SimConfig>("latncy = \"5ms\"").is_err());
    }
}
