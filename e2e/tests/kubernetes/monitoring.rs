//! Observability, proven on the real cluster: the chart with monitoring enabled passes `helm
//! lint` and a server-side dry run, then installs its dashboards (ConfigMaps), PrometheusRule,
//! ServiceMonitor and PodMonitor. A real Prometheus (built from the Go module proxy with
//! Kubernetes service discovery, as a host process) finds the replica pods and the operator
//! through the chart's plain scrape configuration and evaluates the chart's alerting rules.
//! With the subnet under load (updates, queries, traps), every panel's query and every
//! template variable of the installed dashboards returns series, and every alert's expression
//! evaluates with each of its selectors returning series. Stopping two of the four replicas
//! (SIGSTOP) fires the "not finalizing" and "below quorum" alerts; they resolve once the
//! replicas run again.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candid::Encode;
use thicket_e2e::{cluster, kubectl, kubectl_try, repo_dir, wait_for};

use super::load;
use super::operator::{DEMO_NS, Demo, OPERATOR_NS, wait_settled};

const SUBNET: &str = "demo";
const MONITORING: [&str; 6] = [
    "--set",
    "dashboards.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
];

/// `GET /api/v1/<path>` with `params` (URL-encoded) from the Prometheus at `prom`: its
/// `data`, or the error it answered.
fn api(prom: &str, path: &str, params: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-G"]);
    for (k, v) in params {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd
        .arg(format!("{prom}/api/v1/{path}"))
        .output()
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"].clone())
}

/// An instant query's result series.
fn query(prom: &str, expr: &str) -> Result<Vec<serde_json::Value>, String> {
    let data = api(prom, "query", &[("query", expr)])?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

/// The dashboards' variables, filled in for the test subnet.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$namespace", DEMO_NS)
        .replace("$subnet", SUBNET)
        .replace("$replica", &format!("{SUBNET}-0"))
}

/// The operator dashboard's namespace is the operator's.
fn substitute_for(dashboard: &str, expr: &str) -> String {
    if dashboard.contains("operator") {
        substitute(&expr.replace("$namespace", OPERATOR_NS))
    } else {
        substitute(expr)
    }
}

/// The metric selectors in a PromQL expression (`thicket_...` and `up`, with their matchers).
fn selectors(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = (chars[i].is_ascii_alphabetic() || chars[i] == '_')
            && (i == 0 || !(chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '_'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        let name: String = chars[i..j].iter().collect();
        let metric = name.starts_with("thicket_") || (name == "up" && chars.get(j) == Some(&'{'));
        if metric {
            let mut end = j;
            if chars.get(j) == Some(&'{') {
                while end < chars.len() && chars[end] != '}' {
                    end += 1;
                }
                end += 1;
            }
            out.push(chars[i..end.min(chars.len())].iter().collect());
        }
        i = j;
    }
    out.sort();
    out.dedup();
    out
}

/// Every panel query of a Grafana dashboard (rows' nested panels included).
fn panel_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push((
                    panel["title"].as_str().unwrap_or("?").to_string(),
                    expr.into(),
                ));
            }
        }
    }
    out
}

/// `label_values(SELECTOR, LABEL)` of each query variable.
fn variable_queries(dashboard: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        let Some(inner) = q.and_then(|q| q.strip_prefix("label_values(")) else {
            continue;
        };
        let inner = inner.trim_end_matches(')');
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        out.push((
            v["name"].as_str().unwrap_or("?").into(),
            selector.trim().into(),
            label.trim().into(),
        ));
    }
    out
}

/// The dashboards the chart installed: (file name, JSON).
fn installed_dashboards() -> Vec<(String, serde_json::Value)> {
    let list = kubectl(&[
        "-n",
        OPERATOR_NS,
        "get",
        "configmaps",
        "-l",
        "grafana_dashboard=1",
        "-o",
        "json",
    ]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("a ConfigMap list");
    let mut out = Vec::new();
    for cm in list["items"].as_array().into_iter().flatten() {
        for (file, text) in cm["data"].as_object().into_iter().flatten() {
            let json = serde_json::from_str(text.as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{file} in a dashboard ConfigMap is not JSON: {e}"));
            out.push((file.clone(), json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The alerts of the PrometheusRule the chart installed: (name, expression).
fn installed_alerts() -> Vec<(String, String)> {
    let rule = kubectl(&[
        "-n",
        OPERATOR_NS,
        "get",
        "prometheusrules",
        "thicket-operator",
        "-o",
        "json",
    ]);
    let rule: serde_json::Value = serde_json::from_str(&rule).expect("a PrometheusRule");
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().into_iter().flatten() {
        for r in group["rules"].as_array().into_iter().flatten() {
            if let (Some(name), Some(expr)) = (r["alert"].as_str(), r["expr"].as_str()) {
                out.push((name.to_string(), expr.to_string()));
            }
        }
    }
    out
}

/// What is wrong with the dashboards' and alerts' queries now (empty: all return data).
fn missing_data(
    prom: &str,
    dashboards: &[(String, serde_json::Value)],
    alerts: &[(String, String)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, d) in dashboards {
        for (title, expr) in panel_queries(d) {
            let expr = substitute_for(file, &expr);
            match query(prom, &expr) {
                Ok(r) if r.is_empty() => {
                    problems.push(format!("{file} {title:?}: no series: {expr}"))
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{file} {title:?}: {e}: {expr}")),
            }
        }
        for (name, selector, label) in variable_queries(d) {
            let selector = substitute_for(file, &selector);
            let values = api(
                prom,
                &format!("label/{label}/values"),
                &[("match[]", &selector)],
            );
            match values.as_ref().map(|v| v.as_array().map_or(0, Vec::len)) {
                Ok(0) => problems.push(format!(
                    "{file} variable {name}: no values of {label} in {selector}"
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("{file} variable {name}: {e}")),
            }
        }
    }
    for (alert, expr) in alerts {
        if let Err(e) = query(prom, expr) {
            problems.push(format!("alert {alert}: {e}"));
        }
        for selector in selectors(expr) {
            match query(prom, &selector) {
                Ok(r) if r.is_empty() => {
                    problems.push(format!("alert {alert}: no series for {selector}"))
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("alert {alert}: {selector}: {e}")),
            }
        }
    }
    problems
}

/// Whether what the subnet's replicas counted shows the load: traps, queries and sync calls.
fn load_counted(prom: &str) -> Result<(), String> {
    let scope = format!("namespace=\"{DEMO_NS}\", subnet=\"{SUBNET}\"");
    for (what, expr) in [
        (
            "traps",
            format!(
                "thicket_execution_rejects_total{{{scope}, kind=\"update\", reject_code=\"canister_error\"}}"
            ),
        ),
        (
            "queries",
            format!("thicket_execution_messages_total{{{scope}, kind=\"query\"}}"),
        ),
        (
            "updates",
            format!("thicket_execution_messages_total{{{scope}, kind=\"update\"}}"),
        ),
        (
            "sync calls",
            format!(
                "thicket_http_request_duration_seconds_count{{{scope}, endpoint=\"call_sync\"}}"
            ),
        ),
    ] {
        let counted = query(prom, &format!("sum(increase({expr}[5m])) > 0"))?;
        if counted.is_empty() {
            return Err(format!("no {what} counted: {expr}"));
        }
    }
    Ok(())
}

/// Series of alert `name`'s expression for the test subnet (none while it holds).
fn alert_series(prom: &str, alerts: &[(String, String)], name: &str) -> Vec<serde_json::Value> {
    let expr = &alerts
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("the PrometheusRule has {name}"))
        .1;
    query(prom, expr)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_iter()
        .filter(|s| s["metric"]["subnet"] == SUBNET)
        .collect()
}

/// Firing alerts named `name` for the test subnet.
fn firing(prom: &str, name: &str) -> bool {
    let expr = format!(
        "ALERTS{{alertname=\"{name}\", alertstate=\"firing\", namespace=\"{DEMO_NS}\", subnet=\"{SUBNET}\"}}"
    );
    query(prom, &expr).is_ok_and(|r| !r.is_empty())
}

/// Host pids of the replica processes of `pod` (found by their environment).
fn replica_pids(pod: &str) -> Vec<String> {
    let want = format!("POD_NAME={pod}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let is_replica = cmdline.split(|b| *b == 0).any(|a| a == b"replica");
        let in_pod = environ.split(|b| *b == 0).any(|v| v == want.as_bytes());
        if is_replica && in_pod {
            pids.push(name);
        }
    }
    pids
}

fn signal(sig: &str, pids: &[String]) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids)
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} {pids:?}");
}

/// Stopped processes, continued when dropped (also when the test fails).
struct Stopped(Vec<String>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").args(&self.0).status();
    }
}

/// Queries and trapping calls in the background, next to the update calls of [`load::Load`].
fn queries_and_traps(demo: &Demo, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    let agent = load::agent(&demo.url, &demo.key);
    let canister = demo.canister;
    std::thread::spawn(move || {
        let (mut queries, mut traps) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            if load::get(&agent, canister).is_ok() {
                queries += 1;
            }
            if queries % 10 == 0 {
                let trapped = load::runtime_block(
                    agent
                        .update(&canister, "inc_then_trap")
                        .with_arg(Encode!().expect("no arguments"))
                        .call_and_wait(),
                );
                if trapped.is_err() {
                    traps += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (queries, traps)
    })
}

fn diagnose(prom: &str) -> String {
    let targets = api(prom, "targets", &[("state", "active")])
        .map(|t| {
            t["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("{} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|e| e);
    let alerts = query(prom, "ALERTS")
        .map(|a| format!("{a:?}"))
        .unwrap_or_else(|e| e);
    format!("--- targets\n{targets}\n--- alerts\n{alerts}")
}

pub fn dashboards_and_alerts_on_a_real_prometheus(demo: &Demo) {
    let chart = repo_dir().join("charts/thicket-operator");
    let chart = chart.to_str().expect("UTF-8 path");

    // The chart with monitoring enabled: lint, a server-side dry run against the API server
    // (with the Prometheus operator's CRDs), then installed.
    cluster(&["monitoring-crds"]);
    cluster(&[&["helm", "lint", chart][..], &MONITORING].concat());
    let rendered = cluster(
        &[
            &[
                "helm",
                "template",
                "thicket-operator",
                chart,
                "--namespace",
                OPERATOR_NS,
                "--set",
                "prometheusRule.runbookBaseURL=https://runbooks.example/thicket/",
            ][..],
            &MONITORING,
        ]
        .concat(),
    );
    assert!(
        rendered.contains("runbook_url: https://runbooks.example/thicket/subnet-not-finalizing.md"),
        "the PrometheusRule links each alert's runbook under runbookBaseURL"
    );
    let (ok, out) = kubectl_try(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(&rendered),
    );
    assert!(
        ok,
        "server-side dry run of the chart with monitoring enabled: {out}"
    );
    cluster(
        &[
            &[
                "helm",
                "upgrade",
                "thicket-operator",
                chart,
                "--namespace",
                OPERATOR_NS,
                "--reuse-values",
                "--wait",
                "--timeout",
                "120s",
            ][..],
            &MONITORING,
        ]
        .concat(),
    );
    let dashboards = installed_dashboards();
    let names: Vec<&str> = dashboards.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "thicket-canisters.json",
            "thicket-operator.json",
            "thicket-replica.json",
            "thicket-subnet.json"
        ],
        "the chart installs every dashboard"
    );
    let alerts = installed_alerts();
    assert!(
        alerts.len() >= 9,
        "the PrometheusRule carries the alerts: {alerts:?}"
    );
    for kind in ["podmonitor", "servicemonitor"] {
        let (ok, out) = kubectl_try(&["-n", OPERATOR_NS, "get", kind, "-o", "name"], None);
        assert!(
            ok && !out.trim().is_empty(),
            "the chart installs a {kind}: {out}"
        );
    }

    // Prometheus finds the four replicas and the operator through the Kubernetes API.
    let prom = cluster(&["prometheus"]).trim().to_string();
    let started = Instant::now();
    wait_for(
        "Prometheus to scrape the 4 replicas and the operator",
        120,
        || {
            let replicas = query(
                &prom,
                &format!("up{{job=\"thicket-replicas\", namespace=\"{DEMO_NS}\", subnet=\"{SUBNET}\"}} == 1"),
            )
            .ok()?;
            let operator = query(&prom, "up{job=\"thicket-operator\"} == 1").ok()?;
            (replicas.len() == 4 && !operator.is_empty()).then_some(())
        },
        || diagnose(&prom),
    );

    // Under load, every panel, variable and alert selector has data.
    let updates = load::Load::start(load::agent(&demo.url, &demo.key), demo.canister);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = queries_and_traps(demo, stop.clone());
    let last = std::cell::RefCell::new(Vec::new());
    wait_for(
        "every dashboard query and alert selector to return data",
        240,
        || {
            let mut problems = missing_data(&prom, &dashboards, &alerts);
            if let Err(e) = load_counted(&prom) {
                problems.push(e);
            }
            let ok = problems.is_empty();
            *last.borrow_mut() = problems;
            ok.then_some(())
        },
        || format!("{}\n{}", last.borrow().join("\n"), diagnose(&prom)),
    );
    let panels: usize = dashboards.iter().map(|(_, d)| panel_queries(d).len()).sum();
    stop.store(true, Ordering::Relaxed);
    let (queries, traps) = reads.join().expect("the query thread");
    let (answered, failed, _) = updates.stop();
    eprintln!(
        "   {panels} panel queries and {} alert expressions returned data after {:.0} s of scraping ({answered} updates, {failed} failed; {queries} queries; {traps} traps)",
        alerts.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(traps > 0 && queries > 0, "the load trapped and queried");
    for alert in ["ThicketSubnetNotFinalizing", "ThicketSubnetBelowQuorum"] {
        let held = alert_series(&prom, &alerts, alert);
        assert!(
            held.is_empty(),
            "{alert} holds on a healthy subnet: {held:?}"
        );
    }

    // Two of four replicas stopped: the subnet cannot finalize, and fewer than n - f are ready.
    let pids: Vec<String> = ["demo-2", "demo-3"]
        .iter()
        .flat_map(|pod| {
            let p = replica_pids(pod);
            assert!(!p.is_empty(), "the replica process of {pod}");
            p
        })
        .collect();
    let stopped = Stopped(pids.clone());
    signal("STOP", &pids);
    let stalled = Instant::now();
    for alert in ["ThicketSubnetBelowQuorum", "ThicketSubnetNotFinalizing"] {
        wait_for(
            &format!("{alert} to fire"),
            300,
            || firing(&prom, alert).then_some(()),
            || diagnose(&prom),
        );
        eprintln!(
            "   {alert} firing {:.0} s after two replicas stopped",
            stalled.elapsed().as_secs_f64()
        );
    }
    drop(stopped);
    let resumed = Instant::now();
    wait_for(
        "both alerts to resolve",
        300,
        || {
            (!firing(&prom, "ThicketSubnetBelowQuorum")
                && !firing(&prom, "ThicketSubnetNotFinalizing"))
            .then_some(())
        },
        || diagnose(&prom),
    );
    eprintln!(
        "   both alerts resolved {:.0} s after the replicas resumed",
        resumed.elapsed().as_secs_f64()
    );
    wait_settled();
}
