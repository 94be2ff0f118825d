//! Keeps secrets and access tokens out of every message riskbatch prints or stores.

/// Replaces the value of `access_token` and `secret` in URLs and JSON by `***`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for name in ["access_token", "secret"] {
        for (prefix, stops) in [
            (format!("{name}="), &['&', ' ', '"', '\'', ')', '\n'][..]),
            (format!("\"{name}\":\""), &['"'][..]),
        ] {
            let mut from = 0;
            while let Some(found) = out[from..].find(&prefix) {
                let start = from + found + prefix.len();
                let end = out[start..]
                    .find(|c: char| stops.contains(&c))
                    .map_or(out.len(), |i| start + i);
                out.replace_range(start..end, "***");
                from = start + 3;
            }
        }
    }
    out
}

/// `kind: error: cause: cause…` on one line, each part redacted.
pub fn error_chain(kind: &str, err: &dyn std::error::Error) -> String {
    let mut message = format!("{kind}: {}", redact(&err.to_string()));
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&redact(&cause.to_string()));
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_tokens_and_secrets_in_urls_and_json() {
        assert_eq!(
            redact(
                "error sending request for url (http://h/wxa/servicemarket?access_token=ABC.def-1)"
            ),
            "error sending request for url (http://h/wxa/servicemarket?access_token=***)"
        );
        assert_eq!(
            redact("GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=s3cr3t&x=1"),
            "GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=***&x=1"
        );
        assert_eq!(
            redact(r#"{"access_token":"tok","secret":"s"}"#),
            r#"{"access_token":"***","secret":"***"}"#
        );
        assert_eq!(redact("nothing here"), "nothing here");
    }
}
