use super::*;

fn parse(text: &str) -> Result<Job> {
    Job::parse(text, Path::new("/jobs/x.toml"), None)
}

fn err(text: &str) -> String {
    format!("{:#}", parse(text).unwrap_err())
}

const MINIMAL: &str = "name = \"spring\"\n[input]\npath = \"../data/p.csv\"\n";

#[test]
fn minimal_job_gets_documented_defaults() {
    let job = parse(MINIMAL).unwrap();
    assert_eq!(job.input.path, Path::new("/data/p.csv"));
    assert_eq!(job.scene, Scene::Marketing);
    assert_eq!(job.throttle.chunk_size, 1000);
    assert_eq!(job.throttle.rate, 50);
    assert_eq!(job.throttle.concurrency, 16);
    assert_eq!(job.throttle.max_retries, 5);
    assert_eq!(job.throttle.timeout, Duration::from_secs(10));
    assert_eq!(job.api.base_url, BaseUrl::Sim);
    assert_eq!(job.api.token, TokenSource::Stable);
    assert_eq!(job.state_dir, Path::new("/jobs/.riskbatch/spring"));
    assert_eq!(job.output.dir, Path::new("/jobs/out/spring"));
    assert!(job.output.parquet && job.output.csv);
    assert_eq!(job.cache_ttl, Duration::from_secs(86400));
    assert_eq!(job.column("openid"), Some("openid"));
}

#[test]
fn state_dir_override_wins() {
    let job = Job::parse(MINIMAL, Path::new("/jobs/x.toml"), Some("/var/rb".into())).unwrap();
    assert_eq!(job.state_dir, Path::new("/var/rb/spring"));
}

#[test]
fn errors_name_the_file_and_the_key() {
    let cases = [
        (
            format!("{MINIMAL}[api]\nsecret = \"abc\"\n"),
            "`api.secret`",
        ),
        (
            format!("{MINIMAL}[throttle]\nrate = 0\n"),
            "`throttle.rate`",
        ),
        (
            format!("{MINIMAL}[throttle]\ntimeout = \"10\"\n"),
            "`throttle.timeout`",
        ),
        (format!("{MINIMAL}[throttle]\nrtae = 5\n"), "rtae"),
        (
            format!("{MINIMAL}[output]\nformats = [\"xlsx\"]\n"),
            "`output.formats`",
        ),
        (format!("{MINIMAL}[api]\npath = \"/x\"\n"), "`api.path`"),
        (format!("{MINIMAL}[api]\ntoken = \"mine\"\n"), "`api.token`"),
        (
            format!("{MINIMAL}[cache]\nttl = \"forever\"\n"),
            "`cache.ttl`",
        ),
        (
            format!("{MINIMAL}[input.columns]\nphone = \"p\"\n"),
            "`input.columns.phone`",
        ),
        (
            format!("{MINIMAL}[input.columns]\nphonenum = \"p\"\n"),
            "`input.columns.openid`",
        ),
        (MINIMAL.replace("spring", "Spring Coupons"), "`name`"),
        (
            format!("{MINIMAL}source = \"app\"\n")
                .replace("[input]\npath = \"../data/p.csv\"\n", "")
                + "[input]\npath=\"p.csv\"\n",
            "user_access_token",
        ),
        (
            "name = \"x\"\nscene = \"shop\"\n[input]\npath = \"p.csv\"\n".to_string(),
            "scene",
        ),
    ];
    for (text, expected) in cases {
        let message = err(&text);
        assert!(message.contains("/jobs/x.toml"), "{message}");
        assert!(message.contains(expected), "`{expected}` not in: {message}");
        assert_eq!(
            crate::exit::exit_for(&parse(&text).unwrap_err()),
            crate::exit::Exit::Usage
        );
    }
}

#[test]
fn token_command_and_client_credential() {
    let job = parse(&format!(
        "{MINIMAL}[api]\ntoken = {{ command = \"cat tok\" }}\n"
    ))
    .unwrap();
    assert_eq!(job.api.token, TokenSource::Command("cat tok".into()));
    let job = parse(&format!(
        "{MINIMAL}[api]\ntoken = \"client_credential\"\npath = \"/tcb/servicemarket\"\n"
    ))
    .unwrap();
    assert_eq!(job.api.token, TokenSource::ClientCredential);
    assert_eq!(job.api.path, ApiPath::Tcb);
}
