//! The job file (SPEC §2): parsed from TOML, validated once, then read-only.
//!
//! Every later stage takes `&Job`; nothing downstream sees TOML or clap types.
//! Unknown keys are errors so that a typo cannot silently change a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::duration;
use crate::exit::usage;
use crate::sim::SimConfig;
use crate::wechat::{ApiPath, Scene, Source};

/// The API fields a column can be mapped to, in the order they are documented.
pub const API_FIELDS: [&str; 9] = [
    "openid",
    "phonenum",
    "certid",
    "clientip",
    "deviceid",
    "wifibssid",
    "mchcode",
    "user_access_token",
    "email",
];

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    /// The job file itself, for messages.
    pub file: PathBuf,
    pub scene: Scene,
    pub source: Source,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub api: ApiSpec,
    pub throttle: Throttle,
    pub lists: Lists,
    /// Reuse an identical request's result within this age, across runs; zero disables.
    pub cache_ttl: Duration,
    /// The folder of this job's checkpoint store (`<state dir>/<name>`).
    pub state_dir: PathBuf,
    /// The folder shared by the jobs beside each other (tokens per appid live here).
    pub shared_state_dir: PathBuf,
    pub sim: SimConfig,
    /// `[push]`: what `riskbatch receive` reads its secrets from.
    pub push: Option<PushSpec>,
}

#[derive(Debug, Clone)]
pub struct InputSpec {
    pub path: PathBuf,
    pub encoding: Encoding,
    /// API field → column name, for the mapped fields only.
    pub columns: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    Auto,
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    Gbk,
    Gb18030,
}

#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub dir: PathBuf,
    pub parquet: bool,
    pub csv: bool,
    pub mask: Vec<String>,
    pub csv_encoding: CsvEncoding,
    /// Where metrics.prom goes, as written (relative to `dir`).
    pub metrics: PathBuf,
}

impl OutputSpec {
    /// metrics.prom's path: in `dir` unless the job names an absolute one
    /// (node_exporter's textfile folder).
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join(&self.metrics)
    }
}

/// The encoding of results.csv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CsvEncoding {
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// UTF-8 with a byte-order mark: what Excel needs to open it as UTF-8.
    #[serde(rename = "utf-8-bom", alias = "utf8-bom")]
    Utf8Bom,
    Gbk,
    Gb18030,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseUrl {
    /// The embedded simulator, started in-process on a random loopback port.
    Sim,
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `/cgi-bin/stable_token`: shared safely by any number of processes.
    Stable,
    /// `/cgi-bin/token`: each fetch invalidates the previous token.
    ClientCredential,
    /// A program that prints a valid access_token (a central token service).
    Command(String),
}

#[derive(Debug, Clone)]
pub struct PushSpec {
    /// The variable holding the Token of the message-push settings.
    pub token_env: String,
    /// The variable holding the EncodingAESKey (compatible and safe mode).
    pub aes_key_env: String,
}

#[derive(Debug, Clone)]
pub struct ApiSpec {
    pub base_url: BaseUrl,
    pub path: ApiPath,
    pub appid_env: String,
    pub secret_env: String,
    pub token: TokenSource,
    /// What one call costs, for estimates and the report.
    pub price_per_call: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Throttle {
    pub chunk_size: u32,
    pub rate: u32,
    pub concurrency: u32,
    pub max_retries: u32,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct Lists {
    pub allow: Option<PathBuf>,
    pub deny: Option<PathBuf>,
}

// ---- the file as written ----------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: String,
    #[serde(default = "default_scene")]
    scene: SceneName,
    #[serde(default = "default_source")]
    source: Source,
    input: RawInput,
    #[serde(default)]
    output: RawOutput,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    throttle: RawThrottle,
    #[serde(default)]
    lists: RawLists,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    sim: SimConfig,
    push: Option<RawPush>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    token_env: Option<String>,
    aes_key_env: Option<String>,
    /// Present only so that a token written into the file gets its own error.
    token: Option<toml::Value>,
    aes_key: Option<toml::Value>,
}

/// `scene` as written; `rank_scene` completes "rank".
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SceneName {
    Marketing,
    Account,
    Rank,
}

fn default_scene() -> SceneName {
    SceneName::Marketing
}
fn default_source() -> Source {
    Source::Miniprogram
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    path: String,
    #[serde(default = "default_encoding")]
    encoding: Encoding,
    #[serde(default)]
    columns: Option<BTreeMap<String, String>>,
}

fn default_encoding() -> Encoding {
    Encoding::Auto
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    dir: Option<String>,
    formats: Option<Vec<String>>,
    #[serde(default)]
    mask: Vec<String>,
    #[serde(default)]
    csv_encoding: CsvEncoding,
    metrics: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    base_url: Option<String>,
    path: Option<String>,
    appid_env: Option<String>,
    secret_env: Option<String>,
    token: Option<toml::Value>,
    /// Present only so that a secret written into the file gets its own error.
    secret: Option<toml::Value>,
    appid: Option<toml::Value>,
    price_per_call: Option<f64>,
    rank_scene: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    chunk_size: Option<i64>,
    rate: Option<i64>,
    concurrency: Option<i64>,
    max_retries: Option<i64>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLists {
    allow: Option<String>,
    deny: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    ttl: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<String>,
}

impl Job {
    /// Reads and validates a job file. Every error names the file and the key.
    pub fn load(file: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(file)
            .map_err(|err| usage(format!("cannot read job file {}: {err}", file.display())))?;
        let state_override = std::env::var_os("RISKBATCH_STATE_DIR").map(PathBuf::from);
        Job::parse(&text, file, state_override)
    }

    /// Validates job-file text as if it were read from `file`.
    pub fn parse(text: &str, file: &Path, state_override: Option<PathBuf>) -> Result<Job> {
        let shown = file.display().to_string();
        let raw: RawJob = toml::from_str(text)
            .map_err(|err| usage(format!("{shown}: {}", err.to_string().trim_end())))?;
        let folder = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let folder = std::path::absolute(folder)
            .with_context(|| format!("resolving the folder of {shown}"))?;
        let at = Section {
            shown: &shown,
            folder: &folder,
        };
        at.name(&raw.name)?;
        let input = at.input(raw.input, raw.source)?;
        let output = at.output(raw.output, &raw.name)?;
        let scene = at.scene(raw.scene, raw.api.rank_scene.as_deref(), &input)?;
        let mut api = at.api(raw.api)?;
        if matches!(scene, Scene::Rank(_)) {
            api.path = ApiPath::Rank;
        }
        let throttle = at.throttle(raw.throttle)?;
        let lists = Lists {
            allow: raw.lists.allow.map(|p| resolve(&folder, &p)),
            deny: raw.lists.deny.map(|p| resolve(&folder, &p)),
        };
        let cache_ttl = match raw.cache.ttl {
            None => Duration::from_secs(24 * 3600),
            Some(text) => duration::parse(&text).map_err(|e| at.bad("cache.ttl", e))?,
        };
        let shared_state_dir = at.state_dir(raw.state, state_override)?;
        raw.sim.validate().map_err(|e| at.bad("sim", e))?;
        let push = raw.push.map(|p| at.push(p)).transpose()?;
        Ok(Job {
            state_dir: shared_state_dir.join(&raw.name),
            shared_state_dir,
            name: raw.name,
            file: file.to_path_buf(),
            scene,
            source: raw.source,
            input,
            output,
            api,
            throttle,
            lists,
            cache_ttl,
            sim: raw.sim,
            push,
        })
    }

    /// The column mapped to an API field, if any.
    pub fn column(&self, field: &str) -> Option<&str> {
        self.input.columns.get(field).map(String::as_str)
    }
}

/// `path` against the job file's folder, with `.` and `..` folded away so
/// that messages show the path a person would write.
/// Checks one section of a job file at a time; every error names the file and the key.
struct Section<'a> {
    shown: &'a str,
    folder: &'a Path,
}

impl Section<'_> {
    fn bad(&self, key: &str, why: String) -> anyhow::Error {
        usage(format!("{}: `{key}`: {why}", self.shown))
    }

    fn name(&self, name: &str) -> Result<()> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            return Ok(());
        }
        Err(self.bad(
            "name",
            format!(
                "\"{name}\" must be 1 to 64 characters of a-z, 0-9, - and _ (it names the checkpoint store)"
            ),
        ))
    }

    fn input(&self, raw: RawInput, source: Source) -> Result<InputSpec> {
        let columns = match raw.columns {
            None => BTreeMap::from([("openid".to_string(), "openid".to_string())]),
            Some(columns) => columns,
        };
        for (field, column) in &columns {
            if !API_FIELDS.contains(&field.as_str()) {
                return Err(self.bad(
                    &format!("input.columns.{field}"),
                    format!("not an API field; use one of {}", API_FIELDS.join(", ")),
                ));
            }
            if column.is_empty() {
                return Err(self.bad(
                    &format!("input.columns.{field}"),
                    "the column name is empty".into(),
                ));
            }
        }
        if !columns.contains_key("openid") {
            return Err(self.bad(
                "input.columns.openid",
                "missing: the openid column is required".into(),
            ));
        }
        if source == Source::App && !columns.contains_key("user_access_token") {
            return Err(self.bad(
                "input.columns.user_access_token",
                "missing: source = \"app\" needs the column that holds each user's user_access_token".into(),
            ));
        }
        Ok(InputSpec {
            path: resolve(self.folder, &raw.path),
            encoding: raw.encoding,
            columns,
        })
    }

    fn scene(&self, name: SceneName, rank_scene: Option<&str>, input: &InputSpec) -> Result<Scene> {
        if name != SceneName::Rank {
            if rank_scene.is_some() {
                return Err(self.bad("api.rank_scene", "applies to scene = \"rank\" only".into()));
            }
            return Ok(match name {
                SceneName::Account => Scene::Account,
                _ => Scene::Marketing,
            });
        }
        if !input.columns.contains_key("clientip") {
            return Err(self.bad(
                "input.columns.clientip",
                "missing: scene = \"rank\" sends every row's client_ip, which WeChat requires"
                    .into(),
            ));
        }
        match rank_scene {
            None | Some("marketing") => Ok(Scene::Rank(1)),
            Some("registration") => Ok(Scene::Rank(0)),
            Some(other) => Err(self.bad(
                "api.rank_scene",
                format!("\"{other}\" is not a rank scene; use \"marketing\" or \"registration\""),
            )),
        }
    }

    fn push(&self, raw: RawPush) -> Result<PushSpec> {
        if raw.token.is_some() || raw.aes_key.is_some() {
            return Err(self.bad(
                "push",
                "the push Token and EncodingAESKey must not be written into a job file; put them \
                 in environment variables named by token_env and aes_key_env"
                    .into(),
            ));
        }
        Ok(PushSpec {
            token_env: self.env_name("push.token_env", raw.token_env, "WECHAT_PUSH_TOKEN")?,
            aes_key_env: self.env_name(
                "push.aes_key_env",
                raw.aes_key_env,
                "WECHAT_PUSH_AES_KEY",
            )?,
        })
    }

    fn output(&self, raw: RawOutput, name: &str) -> Result<OutputSpec> {
        let dir = resolve(
            self.folder,
            raw.dir.as_deref().unwrap_or(&format!("out/{name}")),
        );
        let formats = raw
            .formats
            .unwrap_or_else(|| vec!["parquet".into(), "csv".into()]);
        if formats.is_empty() {
            return Err(self.bad(
                "output.formats",
                "is empty; list parquet, csv or both".into(),
            ));
        }
        for format in &formats {
            if format != "parquet" && format != "csv" {
                return Err(self.bad(
                    "output.formats",
                    format!("\"{format}\" is not a format; use \"parquet\" and/or \"csv\""),
                ));
            }
        }
        Ok(OutputSpec {
            dir,
            parquet: formats.iter().any(|f| f == "parquet"),
            csv: formats.iter().any(|f| f == "csv"),
            metrics: PathBuf::from(raw.metrics.as_deref().unwrap_or("metrics.prom")),
            mask: raw.mask,
            csv_encoding: raw.csv_encoding,
        })
    }

    fn api(&self, raw: RawApi) -> Result<ApiSpec> {
        if raw.secret.is_some() {
            return Err(self.bad(
                "api.secret",
                "a secret must not be written into a job file; put it in an environment \
                 variable and name that variable with secret_env (default WECHAT_SECRET)"
                    .into(),
            ));
        }
        if raw.appid.is_some() {
            return Err(self.bad(
                "api.appid",
                "the appid comes from the environment; name the variable with appid_env \
                 (default WECHAT_APPID)"
                    .into(),
            ));
        }
        let price_per_call = match raw.price_per_call {
            Some(p) if !(p.is_finite() && p >= 0.0) => {
                return Err(self.bad(
                    "api.price_per_call",
                    format!("{p} is not a price (0 or more)"),
                ));
            }
            p => p,
        };
        Ok(ApiSpec {
            base_url: self.base_url(raw.base_url.as_deref())?,
            path: self.api_path(raw.path.as_deref())?,
            appid_env: self.env_name("api.appid_env", raw.appid_env, "WECHAT_APPID")?,
            secret_env: self.env_name("api.secret_env", raw.secret_env, "WECHAT_SECRET")?,
            token: self.token(raw.token.as_ref())?,
            price_per_call,
        })
    }

    fn base_url(&self, url: Option<&str>) -> Result<BaseUrl> {
        match url {
            None | Some("sim") => Ok(BaseUrl::Sim),
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(BaseUrl::Url(url.trim_end_matches('/').to_string()))
            }
            Some(other) => Err(self.bad(
                "api.base_url",
                format!(
                    "\"{other}\" is neither \"sim\" nor an http(s) URL such as https://api.weixin.qq.com"
                ),
            )),
        }
    }

    fn api_path(&self, path: Option<&str>) -> Result<ApiPath> {
        match path {
            None | Some("/wxa/servicemarket") => Ok(ApiPath::Wxa),
            Some("/tcb/servicemarket") => Ok(ApiPath::Tcb),
            Some(other) => Err(self.bad(
                "api.path",
                format!(
                    "\"{other}\" is not a risk endpoint; use \"/wxa/servicemarket\" or \"/tcb/servicemarket\""
                ),
            )),
        }
    }

    fn token(&self, token: Option<&toml::Value>) -> Result<TokenSource> {
        match token {
            None => Ok(TokenSource::Stable),
            Some(toml::Value::String(s)) if s == "stable" => Ok(TokenSource::Stable),
            Some(toml::Value::String(s)) if s == "client_credential" => {
                Ok(TokenSource::ClientCredential)
            }
            Some(toml::Value::Table(t))
                if t.len() == 1 && t.get("command").is_some_and(|c| c.is_str()) =>
            {
                let command = t["command"].as_str().unwrap_or_default().trim().to_string();
                if command.is_empty() {
                    return Err(self.bad("api.token.command", "is empty".into()));
                }
                Ok(TokenSource::Command(command))
            }
            Some(_) => Err(self.bad(
                "api.token",
                "use \"stable\", \"client_credential\" or { command = \"...\" }".into(),
            )),
        }
    }

    fn env_name(&self, key: &str, value: Option<String>, default: &str) -> Result<String> {
        let name = value.unwrap_or_else(|| default.to_string());
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(self.bad(
                key,
                format!("\"{name}\" is not an environment variable name"),
            ));
        }
        Ok(name)
    }

    fn throttle(&self, t: RawThrottle) -> Result<Throttle> {
        let int =
            |key: &str, value: Option<i64>, default: i64, min: i64, max: i64| -> Result<u32> {
                let v = value.unwrap_or(default);
                if v < min || v > max {
                    return Err(self.bad(
                        &format!("throttle.{key}"),
                        format!("{v} is out of range {min}..={max}"),
                    ));
                }
                Ok(v as u32)
            };
        Ok(Throttle {
            chunk_size: int("chunk_size", t.chunk_size, 1000, 1, 1_000_000)?,
            rate: int("rate", t.rate, 50, 1, 1_000_000)?,
            concurrency: int("concurrency", t.concurrency, 16, 1, 4096)?,
            max_retries: int("max_retries", t.max_retries, 5, 0, 100)?,
            timeout: match t.timeout {
                None => Duration::from_secs(10),
                Some(text) => {
                    let d = duration::parse(&text).map_err(|e| self.bad("throttle.timeout", e))?;
                    if d.is_zero() {
                        return Err(self.bad("throttle.timeout", "must be more than 0s".into()));
                    }
                    d
                }
            },
        })
    }

    fn state_dir(&self, raw: RawState, state_override: Option<PathBuf>) -> Result<PathBuf> {
        Ok(match state_override {
            Some(dir) => normalize(
                &std::path::absolute(&dir)
                    .with_context(|| format!("resolving RISKBATCH_STATE_DIR {}", dir.display()))?,
            ),
            None => resolve(self.folder, raw.dir.as_deref().unwrap_or(".riskbatch")),
        })
    }
}

fn resolve(folder: &Path, path: &str) -> PathBuf {
    normalize(&folder.join(path))
}

/// Folds `.` and `..` lexically (the folder may not exist yet).
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests;
