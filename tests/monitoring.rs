//! The alert rules in deploy/monitoring/ loaded and unit-tested by Prometheus's own promtool
//! (Debian's `prometheus` package; scripts/install-deps.sh installs it): every rule parses,
//! every alert says what happened and what to do, and each fires on the series it is for and
//! not on healthy ones (tests/monitoring/alerts_test.yaml).

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/install-deps.sh installs it)");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{said}");
    said
}

#[test]
fn alert_rules_load_and_fire_on_what_they_are_for() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/monitoring/alerts.yaml")).unwrap();
    let resource: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(resource["kind"], "PrometheusRule");
    let groups = resource["spec"]["groups"].clone();
    let dir = tempfile::tempdir().unwrap();

    let full = serde_json::json!({ "groups": groups });
    std::fs::write(dir.path().join("full.json"), full.to_string()).unwrap();
    let checked = promtool(&["check", "rules", "full.json"], dir.path());
    assert!(checked.contains("SUCCESS"), "{checked}");

    // The tests compare annotations exactly; they spell out the summaries, and the longer
    // descriptions are checked here instead: each alert has both.
    let mut tested = groups.clone();
    let mut alerts = Vec::new();
    for group in tested.as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            let annotations = rule["annotations"].as_object_mut().unwrap();
            for key in ["summary", "description"] {
                let said = annotations.get(key).and_then(|v| v.as_str()).unwrap_or("");
                assert!(said.len() > 20, "{name}: {key} {said:?}");
            }
            annotations.remove("description");
            alerts.push(name);
        }
    }
    let rules = serde_json::json!({ "groups": tested });
    std::fs::write(dir.path().join("rules.json"), rules.to_string()).unwrap();
    let cases = std::fs::read_to_string(root.join("tests/monitoring/alerts_test.yaml")).unwrap();
    for alert in &alerts {
        assert!(
            cases.contains(&format!("alertname: {alert}\n")),
            "{alert} has no promtool test"
        );
    }
    std::fs::write(dir.path().join("alerts_test.yaml"), cases).unwrap();
    promtool(&["test", "rules", "alerts_test.yaml"], dir.path());
}

#[test]
fn the_dashboard_loads_and_every_panel_expression_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/monitoring/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    // Each expression as a recording rule: promtool parses it as Prometheus would, with the
    // dashboard's variables filled in.
    let mut rules = Vec::new();
    for panel in panels {
        let id = panel["id"].as_i64().unwrap();
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(
            panel["gridPos"]["w"].as_i64().is_some(),
            "panel {id} has no place"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {id} shows nothing");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            rules.push(serde_json::json!({
                "record": format!("dashboard:panel_{id}_{}", target["refId"].as_str().unwrap()),
                "expr": expr.replace("$namespace", "shop").replace("$cluster", "orders"),
            }));
        }
    }
    assert!(rules.len() >= 10, "{} expressions", rules.len());
    let dir = tempfile::tempdir().unwrap();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(dir.path().join("dashboard.json"), file.to_string()).unwrap();
    let checked = promtool(&["check", "rules", "dashboard.json"], dir.path());
    assert!(checked.contains("SUCCESS"), "{checked}");
}
