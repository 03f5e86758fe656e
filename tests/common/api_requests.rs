//! What the API server counts of its own requests (`apiserver_request_total`), by resource
//! and verb: how much load something puts on the control plane.

use std::collections::BTreeMap;

/// (resource, verb) → requests answered so far; "" for requests without a resource.
pub type Counts = BTreeMap<(String, String), f64>;

pub async fn counts(client: &kube::Client) -> Counts {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    let text = client.request_text(request).await.unwrap();
    let mut counts = Counts::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let end = labels[start..].find('"')? + start;
            Some(labels[start..end].to_string())
        };
        let key = (
            label("resource").unwrap_or_default(),
            label("verb").unwrap_or_default(),
        );
        *counts.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap();
    }
    counts
}

/// What was counted between `before` and `after`, zeroes left out.
pub fn between(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .map(|(key, n)| (key.clone(), n - before.get(key).unwrap_or(&0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}
