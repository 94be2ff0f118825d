//! Keeps secrets and access tokens out of every message riskbatch prints or stores.

/// Where a secret's value starts, and the characters that end it.
const SECRET_MARKERS: [(&str, &[char]); 4] = [
    ("access_token=", URL_STOPS),
    ("\"access_token\":\"", JSON_STOPS),
    ("secret=", URL_STOPS),
    ("\"secret\":\"", JSON_STOPS),
];
const URL_STOPS: &[char] = &['&', ' ', '"', '\'', ')', '\n'];
const JSON_STOPS: &[char] = &['"'];

/// Replaces the value of `access_token` and `secret` in URLs and JSON by `***`.
pub fn redact(text: &str) -> String {
    redacted(text.to_string())
}

/// [`redact`] for a string already owned: every reply's message passes
/// here, and almost none holds a secret, so it is returned as it came.
pub fn redacted(mut text: String) -> String {
    // Every marker holds `=` or `"`; most messages hold neither.
    if !text.bytes().any(|b| b == b'=' || b == b'"') {
        return text;
    }
    for (prefix, stops) in SECRET_MARKERS {
        let mut from = 0;
        while let Some(found) = text[from..].find(prefix) {
            let start = from + found + prefix.len();
            let end = text[start..]
                .find(|c: char| stops.contains(&c))
                .map_or(text.len(), |i| start + i);
            text.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    text
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
