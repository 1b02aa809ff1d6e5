//! The shipped monitoring, `deploy/prometheus/tilepipe-rules.yml` and
//! `deploy/grafana/tilepipe-dashboard.json`: the rules pass `promtool
//! check rules` and their unit tests (`promtool test rules`), the
//! dashboard's queries parse as PromQL (checked by promtool as recording
//! rules), and every metric either names is one a real server's `/metrics`
//! exposes over HTTP.
//!
//! promtool comes with Debian's `prometheus` package (scripts/install-deps).
//! Without it the promtool checks are skipped with a message, except in CI
//! (`CI` set), where they fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use tilepipe_testkit::find_in_path;
use tilepipe_testkit::serve::{client, TestServer};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn promtool() -> Option<PathBuf> {
    let found = find_in_path("promtool");
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing: install Debian's prometheus package (scripts/install-deps)"
        );
        eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
    }
    found
}

fn run_promtool(promtool: &Path, dir: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every PromQL query of the dashboard, with Grafana's variables
/// replaced by what they mean in a single-instance query.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/tilepipe-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries.push(expr.replace("$instance", ".*"));
        }
    }
    assert!(queries.len() >= 10, "{queries:?}");
    queries
}

#[test]
fn rules_pass_promtool_and_the_dashboard_queries_parse() {
    let Some(promtool) = promtool() else { return };
    let dir = deploy("prometheus");
    run_promtool(&promtool, &dir, &["check", "rules", "tilepipe-rules.yml"]);
    run_promtool(
        &promtool,
        &dir,
        &["test", "rules", "tilepipe-rules.test.yml"],
    );

    // promtool has no offline query parser; recording rules are parsed
    // like any query.
    let work = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, query) in dashboard_queries().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {}\n",
            serde_json::to_string(query).unwrap()
        ));
    }
    std::fs::write(work.path().join("dashboard.yml"), rules).unwrap();
    run_promtool(&promtool, work.path(), &["check", "rules", "dashboard.yml"]);
}

/// `tilepipe_…` names in a text, histogram series reduced to their
/// family's name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("tilepipe_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| base.ends_with("_seconds"))
            .map_or(name.clone(), str::to_string);
        names.insert(family);
    }
    names
}

#[tokio::test]
async fn rules_and_dashboard_use_metrics_the_server_exposes() {
    let server = TestServer::new().await;
    // The tile directory exists once something was rendered; its
    // filesystem figures are shown from then on.
    std::fs::create_dir_all(&server.tiles).unwrap();
    // The cache limit's figures appear after its first sweep, which `run`
    // and `serve` start; this in-process server has none, so one is
    // recorded as a sweep would.
    server.metrics.record_tile_cache_sweep(
        tilepipe::metrics::TileCacheReport {
            metatiles: 1,
            bytes: 4096,
            limit_bytes: Some(1_000_000_000),
            swept_at: std::time::SystemTime::now(),
        },
        0,
        0,
    );
    let body = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exposed: BTreeSet<String> = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_string)
        .collect();
    assert!(
        exposed.contains("tilepipe_tile_filesystem_used_ratio"),
        "{body}"
    );

    let rules = std::fs::read_to_string(deploy("prometheus/tilepipe-rules.yml")).unwrap();
    let rule_tests = std::fs::read_to_string(deploy("prometheus/tilepipe-rules.test.yml")).unwrap();
    let dashboard = dashboard_queries().join("\n");
    for (file, text) in [
        ("tilepipe-rules.yml", rules.as_str()),
        ("tilepipe-rules.test.yml", rule_tests.as_str()),
        ("tilepipe-dashboard.json", dashboard.as_str()),
    ] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{file} names no tilepipe metric");
        let unknown: Vec<_> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics /metrics does not expose: {unknown:?}"
        );
    }
    server.stop().await;
}
