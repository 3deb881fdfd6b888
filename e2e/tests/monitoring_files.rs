//! The monitoring files the chart ships, checked without a cluster: the alerting rules with
//! promtool (`check rules`, and `test rules`, unit tests of every alert, with the Prometheus
//! that e2e/cluster builds), each alert with a unit test and a runbook; the Grafana dashboards
//! current (charts/tools/dashboards.py writes them) and valid against Grafana's schema as the
//! Grafana Foundation SDK's models state it; and every metric they use exported by the replica
//! or the operator.

use std::path::{Path, PathBuf};
use std::process::Command;

use thicket_e2e::{cluster, repo_dir};

const RULES: &str = "charts/thicket-operator/files/prometheus/thicket.rules.yaml";
const RULE_TESTS: &str = "e2e/prometheus/thicket.rules.test.yaml";

/// `NAME: value` lines of a YAML file (the files are ours: one key per line).
fn values_of(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.trim_start()
                .trim_start_matches("- ")
                .strip_prefix(&format!("{key}: "))
        })
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_every_alert_has_a_test_and_a_runbook() {
    let repo = repo_dir();
    let rules = repo.join(RULES);
    let out = cluster(&["promtool", "check", "rules", rules.to_str().expect("UTF-8")]);
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = repo.join(RULE_TESTS);
    let out = cluster(&["promtool", "test", "rules", tests.to_str().expect("UTF-8")]);
    assert!(out.contains("SUCCESS"), "{out}");

    let text = std::fs::read_to_string(&rules).expect("the rules file");
    let tested = std::fs::read_to_string(&tests).expect("the rule tests");
    let alerts = values_of(&text, "alert");
    assert!(alerts.len() >= 9, "{alerts:?}");
    let tested = values_of(&tested, "alertname");
    for alert in &alerts {
        assert!(
            tested.contains(alert),
            "{alert} has no unit test in {RULE_TESTS}"
        );
    }
    let runbooks = values_of(&text, "runbook");
    assert_eq!(
        runbooks.len(),
        alerts.len(),
        "every alert names its runbook"
    );
    for runbook in runbooks {
        assert!(
            repo.join(&runbook).is_file(),
            "the runbook {runbook} does not exist"
        );
    }
}

/// A virtual environment with the Grafana Foundation SDK, cached outside the clone by the
/// pinned requirements.
fn python_with_sdk(repo: &Path) -> PathBuf {
    let requirements = repo.join("charts/tools/requirements.txt");
    let pinned = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let key: String = pinned
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cache = std::env::var_os("THICKET_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/thicket")))
        .expect("THICKET_CACHE or HOME");
    let venv = cache.join("python").join(key.trim_matches('-'));
    let python = venv.join("bin/python");
    if venv.join(".done").exists() {
        return python;
    }
    // Made in place (a venv's scripts name its directory); `.done` marks it complete.
    let _ = std::fs::remove_dir_all(&venv);
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python3 -m venv (Debian: apt install python3-venv)");
    let ok = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "pip install -r {}", requirements.display());
    std::fs::write(venv.join(".done"), "").expect("marking the venv");
    python
}

#[test]
fn dashboards_are_current_and_valid_against_grafanas_schema() {
    let repo = repo_dir();
    let python = python_with_sdk(&repo);
    let out = Command::new(&python)
        .arg(repo.join("charts/tools/dashboards.py"))
        .arg("--check")
        .output()
        .expect("running charts/tools/dashboards.py");
    assert!(
        out.status.success(),
        "charts/tools/dashboards.py --check:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `thicket_` metric names in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("thicket_")
        .filter(|(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_metric_the_dashboards_and_alerts_use_is_exported() {
    let repo = repo_dir();
    let mut text = std::fs::read_to_string(repo.join(RULES)).expect("the rules file");
    let dashboards = repo.join("charts/thicket-operator/dashboards");
    for entry in std::fs::read_dir(&dashboards).expect("the dashboards") {
        text.push_str(&std::fs::read_to_string(entry.expect("a file").path()).expect("a file"));
    }
    // Label sets not known in advance appear with their first sample: make one of each.
    use thicket_replica::metrics::{EndpointLabels, KindLabel};
    let replica = thicket_replica::metrics::Metrics::default();
    let kind = KindLabel {
        kind: "Ingress".into(),
    };
    let _ = replica.artifacts_received.get_or_create(&kind);
    let _ = replica.artifacts_invalid.get_or_create(&kind);
    let _ = replica.http_duration.get_or_create(&EndpointLabels {
        endpoint: "query",
        status: "2xx",
    });
    let operator = thicket_operator::metrics::Metrics::default();
    operator.failed("subnet", "Status", "uid");
    operator.reconciled("subnet", "uid", std::time::Duration::from_millis(5), true);
    operator.subnet_phase("uid", Some(("Running", false)));
    let exported = format!("{}{}", replica.encode(), operator.encode());
    // The names of the samples exported (counters end in _total, histograms in _bucket,
    // _sum and _count): each name used must be one of them, exactly.
    let samples: std::collections::BTreeSet<&str> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let names = metric_names(&text);
    assert!(names.len() > 30, "{names:?}");
    for name in names {
        assert!(
            samples.contains(name.as_str()),
            "{name} is used by a dashboard or an alert, but neither the replica nor the operator exports it"
        );
    }
}
