//! The WeChat side (wechat-api.md): request shapes, reply parsing, what every
//! answer means for a batch caller, the HTTP client and the access token.

pub mod classify;
pub mod client;
pub mod token;
pub mod transport;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The servicemarket service id of WeChat's risk service.
pub const SERVICE: &str = "wxd8a88093cf541a77";

/// The fields of `sale_risk` / `login_risk`, in the order they are sent.
pub const RISK_OBJECT_FIELDS: [&str; 6] = [
    "mchcode",
    "phonenum",
    "certid",
    "wifibssid",
    "clientip",
    "deviceid",
];

/// Which risk product a job asks (wechat-api.md §2 and §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scene {
    /// Marketing anti-fraud: `weopensecriskservice`, serviceid 3, `sale_risk`.
    Marketing,
    /// Account risk: `weopensecuseracctrisklevel`, serviceid 2, `login_risk`.
    Account,
    /// `POST /wxa/getuserriskrank` with its `scene` (0 registration, 1 marketing).
    Rank(u8),
}

impl Scene {
    pub fn api(self) -> &'static str {
        match self {
            Scene::Marketing => "weopensecriskservice",
            Scene::Account => "weopensecuseracctrisklevel",
            Scene::Rank(_) => "getuserriskrank",
        }
    }

    /// The servicemarket serviceid; for the rank API a tag of its own, which
    /// only keys the cache (a rank answer never answers a servicemarket request).
    pub fn serviceid(self) -> u8 {
        match self {
            Scene::Marketing => 3,
            Scene::Account => 2,
            Scene::Rank(scene) => 100 + scene,
        }
    }

    pub fn object(self) -> &'static str {
        match self {
            Scene::Marketing => "sale_risk",
            Scene::Account => "login_risk",
            Scene::Rank(_) => "",
        }
    }
}

/// Where the participants came from: a mini program or a mobile app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Miniprogram,
    App,
}

/// The two servicemarket paths the seed shows, and the rank API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiPath {
    Wxa,
    Tcb,
    Rank,
}

impl ApiPath {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiPath::Wxa => "/wxa/servicemarket",
            ApiPath::Tcb => "/tcb/servicemarket",
            ApiPath::Rank => "/wxa/getuserriskrank",
        }
    }
}

/// One participant's request: the openid and the optional fields the input has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RiskRequest {
    pub openid: String,
    /// Values for [`RISK_OBJECT_FIELDS`], by position; `None` is left out.
    pub fields: [Option<String>; 6],
    pub user_access_token: Option<String>,
    /// `email_address` of the rank API.
    pub email: Option<String>,
}

/// Identifies identical requests (same scene, same payload) for de-duplication and the cache.
pub type RequestKey = [u8; 16];

impl RiskRequest {
    /// A digest of everything sent except `client_msg_id`.
    pub fn key(&self, scene: Scene) -> RequestKey {
        let mut hasher = Sha256::new();
        hasher.update([scene.serviceid()]);
        let mut part = |tag: u8, value: Option<&str>| {
            if let Some(value) = value {
                hasher.update([tag]);
                hasher.update((value.len() as u32).to_le_bytes());
                hasher.update(value.as_bytes());
            }
        };
        part(0, Some(&self.openid));
        for (i, value) in self.fields.iter().enumerate() {
            part(1 + i as u8, value.as_deref());
        }
        part(9, self.user_access_token.as_deref());
        part(10, self.email.as_deref());
        let digest = hasher.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }

    /// The JSON body of the servicemarket call; `data` is an object, not a string.
    /// Written directly: it is built for every request.
    pub fn body(&self, scene: Scene, client_msg_id: &str) -> Vec<u8> {
        // Sized so that no push reallocates: a body is about 270 bytes.
        let mut body = String::with_capacity(
            160 + self.openid.len()
                + self
                    .fields
                    .iter()
                    .flatten()
                    .map(|f| f.len() + 16)
                    .sum::<usize>()
                + self.user_access_token.as_ref().map_or(0, |t| t.len() + 24)
                + client_msg_id.len(),
        );
        body.push_str(r#"{"service":""#);
        body.push_str(SERVICE);
        body.push_str(r#"","api":""#);
        body.push_str(scene.api());
        body.push_str(r#"","data":{"openid":"#);
        push_json_string(&mut body, &self.openid);
        body.push_str(r#","serviceid":"#);
        body.push(char::from(b'0' + scene.serviceid()));
        body.push_str(",\"");
        body.push_str(scene.object());
        body.push_str("\":{");
        let mut first = true;
        for (name, value) in RISK_OBJECT_FIELDS.iter().zip(&self.fields) {
            if let Some(value) = value {
                if !first {
                    body.push(',');
                }
                first = false;
                body.push('"');
                body.push_str(name);
                body.push_str("\":");
                push_json_string(&mut body, value);
            }
        }
        body.push('}');
        if let Some(token) = &self.user_access_token {
            body.push_str(r#","user_access_token":"#);
            push_json_string(&mut body, token);
        }
        body.push_str(r#"},"client_msg_id":"#);
        push_json_string(&mut body, client_msg_id);
        body.push('}');
        body.into_bytes()
    }
}

impl RiskRequest {
    /// The body of `POST /wxa/getuserriskrank` (wechat-api.md §4).
    pub fn rank_body(&self, appid: &str, scene: u8) -> Vec<u8> {
        let field = |name: &str| {
            RISK_OBJECT_FIELDS
                .iter()
                .position(|f| *f == name)
                .and_then(|i| self.fields[i].as_deref())
        };
        let mut body = serde_json::json!({
            "appid": appid,
            "openid": self.openid,
            "scene": scene,
            "client_ip": field("clientip").unwrap_or_default(),
        });
        if let Some(mobile) = field("phonenum") {
            body["mobile_no"] = mobile.into();
        }
        if let Some(email) = &self.email {
            body["email_address"] = email.as_str().into();
        }
        body.to_string().into_bytes()
    }
}

/// Appends `value` as a JSON string literal.
fn push_json_string(out: &mut String, value: &str) {
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(value).to_string());
    }
}

/// A reply of the risk endpoint, both layers read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub errcode: i64,
    pub errmsg: String,
    /// The inner service `code`, present when the outer errcode is 0.
    pub code: Option<i64>,
    pub msg: Option<String>,
    pub risklevel: Option<i64>,
    pub request_id: Option<String>,
    /// An answer of the rank API: `risklevel` is its `risk_rank` (0–4).
    pub rank: bool,
}

#[derive(Deserialize)]
struct OuterReply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    /// The rank API's answer, at the top level.
    #[serde(default)]
    risk_rank: Option<i64>,
    /// WeChat's own spelling.
    #[serde(default)]
    unoin_id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct InnerReply {
    code: i64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    data: Option<InnerData>,
}

#[derive(Deserialize)]
struct InnerData {
    #[serde(default)]
    risklevel: Option<i64>,
}

impl Reply {
    /// Parses a reply body; `Err` means the body is not the documented shape
    /// (a transport-level failure to be retried).
    pub fn parse(body: &[u8]) -> Result<Reply, String> {
        let outer: OuterReply = serde_json::from_slice(body)
            .map_err(|err| format!("reply is not the documented JSON: {err}"))?;
        let mut reply = Reply {
            errcode: outer.errcode,
            errmsg: outer.errmsg,
            request_id: outer.request_id.filter(|id| !id.is_empty()),
            ..Reply::default()
        };
        if reply.errcode == 0 && outer.risk_rank.is_some() {
            reply.rank = true;
            reply.code = Some(0);
            reply.msg = Some(reply.errmsg.clone());
            reply.risklevel = outer.risk_rank;
            reply.request_id = outer.unoin_id.map(|id| match id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        } else if reply.errcode == 0 {
            let data = outer
                .data
                .ok_or_else(|| "reply has errcode 0 but no data".to_string())?;
            let inner: InnerReply = serde_json::from_str(&data)
                .map_err(|err| format!("reply data is not the documented JSON string: {err}"))?;
            reply.code = Some(inner.code);
            reply.msg = Some(inner.msg);
            reply.risklevel = inner.data.and_then(|d| d.risklevel);
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RiskRequest {
        RiskRequest {
            openid: "oPDER5U0VMARiyXxUruU4SYmyOiw".into(),
            fields: [
                None,
                Some("13800000000".into()),
                None,
                None,
                Some("1.2.3.4".into()),
                None,
            ],
            user_access_token: None,
            email: None,
        }
    }

    #[test]
    fn the_rank_body_names_the_appid_scene_and_client_ip_and_the_reply_its_rank() {
        let mut request = request();
        request.email = Some("a@example.com".into());
        let body: serde_json::Value =
            serde_json::from_slice(&request.rank_body("wxapp", 1)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"appid": "wxapp", "openid": "oPDER5U0VMARiyXxUruU4SYmyOiw",
                "scene": 1, "client_ip": "1.2.3.4", "mobile_no": "13800000000",
                "email_address": "a@example.com"})
        );
        let reply = Reply::parse(
            br#"{"errcode":0,"errmsg":"getuserriskrank succ","risk_rank":4,"unoin_id":123456}"#,
        )
        .unwrap();
        assert!(reply.rank);
        assert_eq!((reply.code, reply.risklevel), (Some(0), Some(4)));
        assert_eq!(reply.request_id.as_deref(), Some("123456"));
        let other = RiskRequest {
            email: None,
            ..request.clone()
        };
        assert_ne!(request.key(Scene::Rank(1)), other.key(Scene::Rank(1)));
        assert_ne!(request.key(Scene::Rank(1)), request.key(Scene::Rank(0)));
        assert_ne!(request.key(Scene::Rank(1)), request.key(Scene::Marketing));
    }

    #[test]
    fn body_sends_data_as_an_object_and_leaves_empty_fields_out() {
        let body: serde_json::Value =
            serde_json::from_slice(&request().body(Scene::Marketing, "riskbatch-r-1-1")).unwrap();
        assert_eq!(body["service"], SERVICE);
        assert_eq!(body["api"], "weopensecriskservice");
        assert_eq!(body["client_msg_id"], "riskbatch-r-1-1");
        assert_eq!(body["data"]["serviceid"], 3);
        assert_eq!(
            body["data"]["sale_risk"],
            serde_json::json!({"phonenum": "13800000000", "clientip": "1.2.3.4"})
        );
        assert!(body["data"].get("user_access_token").is_none());

        let mut app = request();
        app.fields = Default::default();
        app.user_access_token = Some("uat".into());
        let body: serde_json::Value =
            serde_json::from_slice(&app.body(Scene::Account, "m")).unwrap();
        assert_eq!(body["api"], "weopensecuseracctrisklevel");
        assert_eq!(body["data"]["serviceid"], 2);
        assert_eq!(body["data"]["login_risk"], serde_json::json!({}));
        assert_eq!(body["data"]["user_access_token"], "uat");
    }

    #[test]
    fn body_escapes_what_json_needs_escaped() {
        let mut odd = request();
        odd.openid = "o\"quoted\\slash\n".into();
        odd.fields[0] = Some("商户\t1".into());
        let body: serde_json::Value =
            serde_json::from_slice(&odd.body(Scene::Marketing, "m")).unwrap();
        assert_eq!(body["data"]["openid"], "o\"quoted\\slash\n");
        assert_eq!(body["data"]["sale_risk"]["mchcode"], "商户\t1");
    }

    #[test]
    fn key_depends_on_scene_and_every_field() {
        let base = request();
        let mut other = request();
        other.fields[1] = None;
        other.fields[2] = Some("13800000000".into());
        assert_ne!(base.key(Scene::Marketing), other.key(Scene::Marketing));
        assert_ne!(base.key(Scene::Marketing), base.key(Scene::Account));
        assert_eq!(base.key(Scene::Marketing), request().key(Scene::Marketing));
    }

    #[test]
    fn parses_the_nested_reply() {
        let body = br#"{"errcode":0,"errmsg":"ok","data":"{\"code\":0,\"msg\":\"\u8bf7\u6c42\u6210\u529f\",\"data\":{\"risklevel\":3}}","request_id":"MLx7","provider_errmsg":""}"#;
        let reply = Reply::parse(body).unwrap();
        assert_eq!(reply.code, Some(0));
        assert_eq!(reply.risklevel, Some(3));
        assert_eq!(reply.msg.as_deref(), Some("请求成功"));
        assert_eq!(reply.request_id.as_deref(), Some("MLx7"));

        let reply = Reply::parse(br#"{"errcode":61010,"errmsg":"user is not visited"}"#).unwrap();
        assert_eq!((reply.errcode, reply.code), (61010, None));

        assert!(Reply::parse(b"<html>502</html>").is_err());
        assert!(Reply::parse(br#"{"errcode":0,"errmsg":"ok","data":"{oops"}"#).is_err());
    }
}
