//! The body of a pushed message, JSON or XML, read into its top-level fields,
//! and the verdict of the suspicious-account feedback service in it (SPEC §8).

use std::collections::HashMap;

use quick_xml::events::Event;

/// A message's top-level fields as text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields(HashMap<String, String>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A JSON object (`{…}`) or an XML document (`<xml>…</xml>`).
    pub fn parse(body: &str) -> Result<Fields, String> {
        let text = body.trim_start_matches('\u{feff}').trim();
        match text.as_bytes().first() {
            Some(b'{') => Fields::json(text),
            Some(b'<') => Fields::xml(text),
            _ => Err("the body is neither JSON nor XML".into()),
        }
    }

    fn json(text: &str) -> Result<Fields, String> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|err| format!("the JSON body is malformed: {err}"))?;
        let object = value
            .as_object()
            .ok_or_else(|| "the JSON body is not an object".to_string())?;
        Ok(Fields(
            object
                .iter()
                .filter_map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k.clone(), text))
                })
                .collect(),
        ))
    }

    /// The children of the root element: `<xml><Name><![CDATA[v]]></Name>…</xml>`.
    fn xml(text: &str) -> Result<Fields, String> {
        let mut reader = quick_xml::Reader::from_str(text);
        let mut fields = HashMap::new();
        let mut depth = 0usize;
        let mut current: Option<String> = None;
        let mut value = String::new();
        let bad = |err: &dyn std::fmt::Display| format!("the XML body is malformed: {err}");
        loop {
            match reader.read_event().map_err(|e| bad(&e))? {
                Event::Start(start) => {
                    depth += 1;
                    if depth == 2 {
                        current = Some(String::from_utf8_lossy(start.name().as_ref()).into_owned());
                        value.clear();
                    }
                }
                Event::End(_) => {
                    if depth == 2
                        && let Some(name) = current.take()
                    {
                        fields.insert(name, value.trim().to_string());
                    }
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| bad(&"an end tag without a start"))?;
                }
                Event::Text(t) if depth == 2 => {
                    value.push_str(&t.unescape().map_err(|e| bad(&e))?);
                }
                Event::CData(c) if depth == 2 => {
                    value.push_str(&String::from_utf8_lossy(&c.into_inner()));
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if depth != 0 {
            return Err(bad(&"the document is not closed"));
        }
        if fields.is_empty() {
            return Err(bad(&"no fields"));
        }
        Ok(Fields(fields))
    }
}

/// One verdict of the feedback service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Identifies the verdict: the same `global_no` again is the same verdict.
    pub global_no: String,
    /// The openid the verdict is about.
    pub querykey: String,
    pub risklevel: i64,
    pub riskmsg: Option<String>,
    pub risktags: Option<String>,
}

impl Verdict {
    /// The verdict in a message, if it is one (it carries `querykey` and
    /// `risklevel`); `Err` for a verdict that cannot be stored.
    pub fn of(fields: &Fields) -> Result<Option<Verdict>, String> {
        let (Some(querykey), Some(level)) = (fields.get("querykey"), fields.get("risklevel"))
        else {
            return Ok(None);
        };
        let risklevel = level
            .parse()
            .map_err(|_| format!("risklevel \"{level}\" is not a number"))?;
        let global_no = fields
            .get("global_no")
            .filter(|g| !g.is_empty())
            .ok_or_else(|| "the verdict has no global_no".to_string())?;
        if querykey.is_empty() {
            return Err("the verdict's querykey is empty".into());
        }
        let text = |name: &str| fields.get(name).map(str::to_string);
        Ok(Some(Verdict {
            global_no: global_no.to_string(),
            querykey: querykey.to_string(),
            risklevel,
            riskmsg: text("riskmsg"),
            risktags: text("risktags"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_xml_verdicts_read_the_same() {
        let json = r#"{"ToUserName":"gh_1","FromUserName":"o","CreateTime":1714036504,"MsgType":"event",
            "Event":"risk_feedback","querykey":"axy123789","global_no":"9297226955619336745",
            "risklevel":1,"riskmsg":"punished","risktags":""}"#;
        let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><CreateTime>1714036504</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><querykey><![CDATA[axy123789]]></querykey>\
            <global_no>9297226955619336745</global_no><risklevel>1</risklevel>\
            <riskmsg><![CDATA[punished]]></riskmsg><risktags><![CDATA[]]></risktags></xml>";
        let a = Verdict::of(&Fields::parse(json).unwrap()).unwrap().unwrap();
        let b = Verdict::of(&Fields::parse(xml).unwrap()).unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.querykey, "axy123789");
        assert_eq!(a.risklevel, 1);
        assert_eq!(a.riskmsg.as_deref(), Some("punished"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever arrives, reading it never panics: a body is fields or an error.
        #[test]
        fn any_body_is_read_or_refused_without_a_panic(body in ".{0,200}") {
            if let Ok(fields) = Fields::parse(&body) {
                let _ = Verdict::of(&fields);
            }
            let xml = format!("<xml><querykey>{body}</querykey><risklevel>1</risklevel><global_no>{body}</global_no></xml>");
            if let Ok(fields) = Fields::parse(&xml) {
                let _ = Verdict::of(&fields);
            }
        }

        #[test]
        fn any_envelope_is_decrypted_or_refused_without_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            use base64::Engine;
            let key = super::super::crypto::AesKey::parse("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR").unwrap();
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let _ = key.decrypt(&encoded, "wxapp");
        }
    }

    #[test]
    fn other_messages_are_not_verdicts_and_bad_bodies_are_errors() {
        let text =
            Fields::parse("<xml><MsgType>text</MsgType><Content>hi</Content></xml>").unwrap();
        assert_eq!(Verdict::of(&text), Ok(None));
        for bad in [
            "",
            "hello",
            "{",
            "<xml><a>1</b></xml>",
            "<xml><a>1</a>",
            "[1,2]",
        ] {
            assert!(Fields::parse(bad).is_err(), "{bad:?}");
        }
        let no_number =
            Fields::parse(r#"{"querykey":"o","risklevel":"x","global_no":"1"}"#).unwrap();
        assert!(Verdict::of(&no_number).is_err());
    }
}
