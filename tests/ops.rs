//! The operations files, `ops/grafana-dashboard.json` and `ops/alerts.yml`: shaped
//! as Grafana and Prometheus load them, and using only metrics a node exports.
//! (promtool parses their PromQL: `scripts/check-ops.sh`.)

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use common::{Node, free_port};

const DASHBOARD: &str = include_str!("../ops/grafana-dashboard.json");
const ALERTS: &str = include_str!("../ops/alerts.yml");

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("ops/grafana-dashboard.json is JSON")
}

/// Every `expr` string anywhere in a dashboard.
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, out)),
        _ => {}
    }
}

/// Every `expr:` of a rules file: a one-line value, or a block (`|`, `>`, `>-`) whose
/// lines are indented deeper than the key.
fn alert_exprs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let value = value.trim();
        if !value.starts_with(['|', '>']) {
            out.push(value.to_owned());
            continue;
        }
        let mut block = Vec::new();
        while let Some(next) = lines.peek() {
            let deeper = next.len() - next.trim_start().len() > indent;
            if !(deeper || next.trim().is_empty()) {
                break;
            }
            block.push(next.trim());
            lines.next();
        }
        out.push(block.join(" ").trim().to_owned());
    }
    out
}

/// The `ringway_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (i, _) in expr.match_indices("ringway_") {
        if expr[..i].chars().next_back().is_some_and(word) {
            continue;
        }
        let len = expr[i..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(expr.len() - i);
        names.insert(expr[i..i + len].to_owned());
    }
    names
}

/// Metric families of a Prometheus text exposition, with their types.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect()
}

/// Whether `name` is a family, or a series of a histogram family (`_bucket`, `_sum`,
/// `_count`).
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    families.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .and_then(|base| families.get(base))
                .is_some_and(|kind| kind == "histogram")
        })
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard(), &mut exprs);
    for (file, exprs) in [
        ("ops/grafana-dashboard.json", exprs),
        ("ops/alerts.yml", alert_exprs(ALERTS)),
    ] {
        assert!(!exprs.is_empty(), "no expressions found in {file}");
        for name in exprs.iter().flat_map(|e| metric_names(e)) {
            used.entry(name).or_default().insert(file);
        }
    }
    assert!(
        used.len() >= 15,
        "only {} names found: {used:?}",
        used.len()
    );

    // A node with one (absent) peer, so that the mesh families are there too.
    let node = Node::start(|c| {
        c.mesh.listen = Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        c.mesh.peers = vec![format!("n2=127.0.0.1:{}", free_port())];
        c.mesh.secret = "ops-test-mesh-secret".to_owned();
    });
    let (status, text) = node.get("/metrics");
    assert_eq!(status, 200, "{text}");
    let families = families(&text);
    assert!(
        families.contains_key("ringway_mesh_link_up"),
        "the node exports no mesh families:\n{text}"
    );
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exported(name, &families))
        .map(|(name, files)| format!("{name} (used in {files:?})"))
        .collect();
    assert!(
        missing.is_empty(),
        "used but not exported by /metrics:\n  {}\nexported: {:?}",
        missing.join("\n  "),
        families.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_dashboard_imports_as_is() {
    let d = dashboard();
    assert_eq!(d["uid"], "ringway");
    assert_eq!(d["title"], "ringway");
    assert!(d["id"].is_null(), "an exported dashboard has no id");
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "{}",
        d["schemaVersion"]
    );
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    let ds = var("DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let instance = var("instance").expect("an instance variable");
    assert_eq!(instance["type"], "query");
    assert!(
        instance["definition"]
            .as_str()
            .is_some_and(|q| q.contains("up{job=\"ringway\"}")),
        "{instance}"
    );

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "id of {title} repeats"
        );
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title}: no gridPos");
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{title}: {expr:?} ignores the instance variable"
            );
        }
    }
    assert!(graphs >= 10, "{graphs} panels");
}

#[test]
fn every_alert_has_a_duration_a_severity_and_says_what_to_do() {
    let blocks: Vec<&str> = ALERTS.split("- alert: ").skip(1).collect();
    assert!(blocks.len() >= 10, "{} alerts", blocks.len());
    for block in &blocks {
        let name = block.lines().next().unwrap();
        for key in ["expr:", "for:", "summary:", "description:"] {
            assert!(block.contains(key), "{name}: no {key}");
        }
        assert!(
            ["critical", "warning", "info"]
                .iter()
                .any(|s| block.contains(&format!("severity: {s}\n"))),
            "{name}: no severity critical, warning or info"
        );
    }
    // What the issue asks to be alerted on.
    let all = alert_exprs(ALERTS).join("\n");
    for wanted in [
        "up{job=\"ringway\"}",
        "ringway_max_connections",
        "ringway_refused_total",
        "reason=\"slow_consumer\"",
        "reason=\"rate_limited\"",
        "ringway_dropped_total",
        "ringway_publish_to_write_seconds_bucket",
        "ringway_mesh_link_up",
        "ringway_host_memory_bytes",
    ] {
        assert!(all.contains(wanted), "no alert on {wanted}");
    }
}

#[test]
fn the_scanners_read_one_line_and_block_expressions_and_histogram_series() {
    let rules = "\
      - alert: A
        expr: ringway_a_total > 0
        for: 1m
      - alert: B
        expr: |
          sum(rate(ringway_b_seconds_bucket[5m]))
            / on (instance) ringway_c
        for: 5m
";
    let exprs = alert_exprs(rules);
    assert_eq!(
        exprs,
        [
            "ringway_a_total > 0",
            "sum(rate(ringway_b_seconds_bucket[5m])) / on (instance) ringway_c"
        ]
    );
    let names: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert_eq!(
        names,
        ["ringway_a_total", "ringway_b_seconds_bucket", "ringway_c"]
    );
    assert!(metric_names("my_ringway_x + ringway:y").is_empty());
    let fams = families("# TYPE ringway_b_seconds histogram\n# TYPE ringway_a_total counter\n");
    assert!(exported("ringway_b_seconds_bucket", &fams));
    assert!(exported("ringway_b_seconds_count", &fams));
    assert!(exported("ringway_a_total", &fams));
    assert!(!exported("ringway_a_total_count", &fams));
    assert!(!exported("ringway_c", &fams));
}
