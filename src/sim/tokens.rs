//! Access tokens as WeChat hands them out: `/cgi-bin/token` issues a new token
//! and leaves the previous one working for a grace period; `stable_token`
//! returns the same token while it is valid.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Issued {
    value: String,
    expires: Instant,
    /// Set when a newer token replaced this one.
    replaced_at: Option<Instant>,
    /// Invalidated at once (`expire_tokens_after`).
    revoked: bool,
}

/// Why a token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 40001: unknown or replaced longer ago than the grace period.
    Invalid,
    /// 42001: expired.
    Expired,
    /// Invalidated by the `expire_tokens_after` fault.
    Revoked,
}

/// `force_refresh` is honoured at most this many times a day...
const FORCED_PER_DAY: u32 = 20;
/// ...and not again within this long of the previous one.
const FORCED_SPACING: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct TokenBook {
    ttl: Duration,
    grace: Duration,
    issued: Vec<Issued>,
    /// The current stable token and the current `/cgi-bin/token` token.
    stable: Option<String>,
    plain: Option<String>,
    counter: u64,
    forced: u32,
    last_forced: Option<Instant>,
}

impl TokenBook {
    pub fn new(ttl: Duration, grace: Duration) -> TokenBook {
        TokenBook {
            ttl,
            grace,
            issued: Vec::new(),
            stable: None,
            plain: None,
            counter: 0,
            forced: 0,
            last_forced: None,
        }
    }

    fn issue(&mut self, kind: &str, now: Instant, replaces: Option<&str>) -> String {
        if let Some(old) = replaces
            && let Some(token) = self.issued.iter_mut().find(|t| t.value == old)
        {
            token.replaced_at = Some(now);
        }
        let grace = self.grace;
        // Forget tokens nobody can use any more (a revoked one keeps its own answer).
        self.issued.retain(|t| {
            t.expires > now && (t.revoked || t.replaced_at.is_none_or(|at| now < at + grace))
        });
        self.counter += 1;
        let value = format!(
            "{:016x}{kind}SIM{:08}_{:016x}",
            crate::sim::risk::fnv1a(&[kind.as_bytes(), &self.counter.to_le_bytes()]),
            self.counter,
            crate::sim::risk::fnv1a(&[&self.counter.to_le_bytes()])
        );
        self.issued.push(Issued {
            value: value.clone(),
            expires: now + self.ttl,
            replaced_at: None,
            revoked: false,
        });
        value
    }

    /// `/cgi-bin/token`: always a new token; the previous one works for the grace period.
    pub fn client_credential(&mut self, now: Instant) -> (String, u64) {
        let old = self.plain.take();
        let value = self.issue("ACCESS", now, old.as_deref());
        self.plain = Some(value.clone());
        (value, self.ttl.as_secs())
    }

    /// `/cgi-bin/stable_token`: the same token while valid, a new one if forced
    /// (at most 20 forced refreshes a day, none within 30 s of the last).
    pub fn stable(&mut self, now: Instant, force: bool) -> (String, u64) {
        let force = force
            && self.forced < FORCED_PER_DAY
            && self
                .last_forced
                .is_none_or(|at| now.duration_since(at) >= FORCED_SPACING);
        if force {
            self.forced += 1;
            self.last_forced = Some(now);
        }
        if let Some(current) = &self.stable
            && let Some(token) = self
                .issued
                .iter()
                .find(|t| &t.value == current && !t.revoked)
        {
            let remaining = token.expires.saturating_duration_since(now);
            if !force && remaining >= Duration::from_secs(300).min(self.ttl / 2) {
                return (token.value.clone(), remaining.as_secs().max(1));
            }
        }
        let old = self.stable.take();
        let value = self.issue("STABLE", now, old.as_deref());
        self.stable = Some(value.clone());
        (value, self.ttl.as_secs())
    }

    /// Invalidates every token issued so far; the token endpoints then issue new ones.
    pub fn revoke_all(&mut self) {
        for token in &mut self.issued {
            token.revoked = true;
        }
    }

    /// Checks a token presented with a risk call.
    pub fn check(&self, value: &str, now: Instant) -> Result<(), Rejection> {
        let Some(token) = self.issued.iter().find(|t| t.value == value) else {
            return Err(Rejection::Invalid);
        };
        if token.revoked {
            return Err(Rejection::Revoked);
        }
        if now >= token.expires {
            return Err(Rejection::Expired);
        }
        if token.replaced_at.is_some_and(|at| now >= at + self.grace) {
            return Err(Rejection::Invalid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_token_is_shared_and_client_credential_replaces() {
        let mut book = TokenBook::new(Duration::from_secs(7200), Duration::from_secs(300));
        let t0 = Instant::now();
        let (a, _) = book.stable(t0, false);
        let (b, _) = book.stable(t0 + Duration::from_secs(10), false);
        assert_eq!(a, b);
        let (c, _) = book.client_credential(t0);
        let (d, _) = book.client_credential(t0 + Duration::from_secs(1));
        assert_ne!(c, d);
        // The replaced token works during the grace period, then not.
        assert_eq!(book.check(&c, t0 + Duration::from_secs(100)), Ok(()));
        assert_eq!(
            book.check(&c, t0 + Duration::from_secs(400)),
            Err(Rejection::Invalid)
        );
        assert_eq!(book.check(&d, t0 + Duration::from_secs(400)), Ok(()));
        // Stable tokens are separate from /cgi-bin/token tokens.
        assert_eq!(book.check(&a, t0 + Duration::from_secs(400)), Ok(()));
        assert_eq!(
            book.check(&a, t0 + Duration::from_secs(7300)),
            Err(Rejection::Expired)
        );
        assert_eq!(book.check("nonsense", t0), Err(Rejection::Invalid));
    }

    #[test]
    fn forced_stable_refresh_gives_a_new_token() {
        let mut book = TokenBook::new(Duration::from_secs(7200), Duration::from_secs(300));
        let t0 = Instant::now();
        let (a, _) = book.stable(t0, false);
        let (b, _) = book.stable(t0, true);
        assert_ne!(a, b);
        assert_eq!(book.stable(t0, false).0, b);
        // Within 30 s of the last forced refresh, force_refresh changes nothing.
        assert_eq!(book.stable(t0 + Duration::from_secs(10), true).0, b);
        let (c, _) = book.stable(t0 + Duration::from_secs(31), true);
        assert_ne!(b, c);
    }

    #[test]
    fn revoked_tokens_are_rejected_and_replaced() {
        let mut book = TokenBook::new(Duration::from_secs(7200), Duration::from_secs(300));
        let t0 = Instant::now();
        let (a, _) = book.stable(t0, false);
        book.revoke_all();
        assert_eq!(book.check(&a, t0), Err(Rejection::Revoked));
        let (b, _) = book.stable(t0, false);
        assert_ne!(a, b);
        assert_eq!(book.check(&b, t0), Ok(()));
    }
}
