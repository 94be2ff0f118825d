//! A faithful local stand-in for the WeChat endpoints riskbatch uses (SPEC §7):
//! `riskbatch sim`, and `base_url = "sim"` in a job (started in-process on a
//! random loopback port). Reply shapes and request validation follow
//! wechat-api.md; the risk level is a deterministic function of the request.

pub mod risk;
mod server;
mod tokens;

use std::time::Duration;

use serde::Deserialize;

pub use server::{SimHandle, SimStats, start};

/// How the simulator behaves. The same settings are `riskbatch sim` options
/// and the `[sim]` table of a job file.
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

    /// Lifetime of an access token.
    #[arg(long, value_parser = crate::duration::arg, default_value = "7200s")]
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub token_ttl: Duration,

    /// How long a replaced token keeps working (WeChat: 5 minutes).
    #[arg(long, value_parser = crate::duration::arg, default_value = "300s")]
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub token_grace: Duration,

    /// The appid the token endpoints accept (any non-empty appid if unset).
    #[arg(long)]
    pub appid: Option<String>,

    /// The secret the token endpoints accept (any non-empty secret if unset).
    #[arg(long)]
    pub secret: Option<String>,

    /// Seed for the simulator's random choices (latency spread).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            latency: Duration::ZERO,
            latency_spread: Duration::ZERO,
            rate_limit: None,
            token_ttl: Duration::from_secs(7200),
            token_grace: Duration::from_secs(300),
            appid: None,
            secret: None,
            seed: 1,
        }
    }
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.rate_limit == Some(0) {
            return Err("rate_limit must be at least 1".into());
        }
        if self.token_ttl < Duration::from_secs(1) {
            return Err("token_ttl must be at least 1s".into());
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
