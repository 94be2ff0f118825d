//! Access tokens live per user, outside every job folder (SPEC §2).

use crate::harness::*;

const JOB: &str = r#"name = "tok"
[input]
path = "../data/p.csv"
[input.columns]
openid = "openid"
deviceid = "device_id"
[output]
dir = "../out"
[throttle]
rate = 5000
concurrency = 16
"#;

fn workspace(sim: &Sim) -> Workspace {
    let ws = Workspace::new();
    ws.participants("data/p.csv", 2000, 31);
    ws.write(
        "jobs/tok.toml",
        format!("{JOB}[api]\nbase_url = \"{}\"\n", sim.url),
    );
    ws
}

/// The one token file under `dir`, and its access_token.
fn cached_token(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let token = cached["access_token"].as_str().unwrap().to_string();
    (files[0].clone(), token)
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_rotated_token_is_cached_per_user_private_and_never_in_the_job_state_or_output_folders() {
    // Every token issued so far is invalidated after 700 requests: the run refreshes.
    let sim = Sim::start(&["--expire-tokens-after", "700"]);
    let ws = workspace(&sim);
    let output = ws.run(&["run", "jobs/tok.toml", "--progress", "never"]);
    assert_exit(&output, 0);
    assert_eq!(sim.stats().token_fetches.get("stable_token"), Some(&2));
    let dir = ws.path("user-cache/tokens");
    let (file, token) = cached_token(&dir);
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
    }
    for folder in ["jobs", "out", "data"] {
        assert_eq!(
            files_containing(&ws.path(folder), &token),
            Vec::<std::path::PathBuf>::new()
        );
        assert!(files_containing(&ws.path(folder), "test-secret").is_empty());
    }
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!printed.contains(&token));
    assert!(!ws.path("jobs/.riskbatch/tokens").exists());
}

#[test]
fn xdg_cache_home_then_home_locate_the_cache_when_riskbatch_token_dir_is_unset() {
    let sim = Sim::start(&[]);
    let ws = workspace(&sim);
    let xdg = ws.path("xdg");
    let output = ws
        .command(&[
            "run",
            "jobs/tok.toml",
            "--progress",
            "never",
            "--max-chunks",
            "1",
        ])
        .env_remove("RISKBATCH_TOKEN_DIR")
        .env("XDG_CACHE_HOME", &xdg)
        .output()
        .unwrap();
    assert_exit(&output, 75);
    let (_, token) = cached_token(&xdg.join("riskbatch/tokens"));
    let output = ws
        .command(&[
            "run",
            "jobs/tok.toml",
            "--progress",
            "never",
            "--max-chunks",
            "1",
        ])
        .env_remove("RISKBATCH_TOKEN_DIR")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let (_, again) = cached_token(&ws.path("home/.cache/riskbatch/tokens"));
    // A new cache means a new fetch; the stable token endpoint returns the same token.
    assert_eq!(token, again);
    assert_eq!(sim.stats().token_fetches.get("stable_token"), Some(&2));
}

#[test]
fn a_token_file_left_in_an_old_state_folder_is_removed_with_one_line() {
    let sim = Sim::start(&[]);
    let ws = workspace(&sim);
    ws.write(
        "jobs/.riskbatch/tokens/wxtest-stable_token@127.0.0.1.json",
        r#"{"access_token":"OLD-TOKEN-0123456789abcdef","refresh_at_ms":0,"expires_at_ms":0}"#,
    );
    ws.write(
        "jobs/.riskbatch/tokens/wxtest-stable_token@127.0.0.1.lock",
        "",
    );
    let output = ws.run(&["run", "jobs/tok.toml", "--progress", "never"]);
    assert_exit(&output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("access token file"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("removed 2") && lines[0].contains("user-cache/tokens"),
        "{}",
        lines[0]
    );
    assert!(!ws.path("jobs/.riskbatch/tokens").exists());
    assert!(files_containing(&ws.path("jobs"), "OLD-TOKEN").is_empty());
}

#[cfg(unix)]
#[test]
fn a_token_folder_open_to_other_users_is_made_private_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let sim = Sim::start(&[]);
    let ws = workspace(&sim);
    let dir = ws.path("user-cache/tokens");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = ws.run(&["run", "jobs/tok.toml", "--progress", "never"]);
    assert_exit(&output, 0);
    assert_eq!(mode(&dir), 0o700);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("was open to other users (mode 755); made it 700"),
        "{stderr}"
    );
}
