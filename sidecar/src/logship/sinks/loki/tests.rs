//! Loki sink unit tests: the push body.

use super::*;
use crate::logship::event::test_event as event;

#[test]
fn streams_are_split_by_level_and_keep_file_order_and_each_record_s_own_time() {
    let sink = LokiSink {
        url: String::new(),
        labels: BTreeMap::from([("app".to_string(), "todo-app".to_string())]),
        level_label: true,
        tenant_id: None,
    };
    let a = event(r#"{"level":30,"time":"2026-01-01T00:00:02Z","msg":"a"}"#);
    let b = event(r#"{"level":50,"time":"2026-01-01T00:00:01Z","msg":"b"}"#);
    let c = event(r#"{"level":30,"time":"2026-01-01T00:00:01Z","msg":"c"}"#);

    let body = sink.encode(&[&a, &b, &c]).unwrap();

    let push: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
    let streams = push["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    assert_eq!(
        streams[0]["stream"],
        serde_json::json!({"app": "todo-app", "level": "info"})
    );
    let values = streams[0]["values"].as_array().unwrap();
    assert_eq!(values[0][1], a.text.as_str());
    assert_eq!(values[1][1], c.text.as_str());
    // c is older than a in the same stream: it keeps its own time.
    assert_eq!(values[0][0], "1767225602000000000");
    assert_eq!(values[1][0], "1767225601000000000");
    assert_eq!(streams[1]["stream"]["level"], "error");
}

#[test]
fn a_high_cardinality_label_or_too_many_labels_are_refused() {
    use crate::configuration::load_for_test as load;
    let error = load(&[
        ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
        ("SIDECAR__LOGSHIP__SINKS__LOKI__URL", "http://loki:3100"),
        ("SIDECAR__LOGSHIP__SINKS__LOKI__LABELS__REQUEST_ID", "x"),
    ])
    .unwrap_err();
    assert!(error.contains("request_id"), "{error}");

    let labels: Vec<(String, &str)> = (0..9)
        .map(|n| (format!("SIDECAR__LOGSHIP__SINKS__LOKI__LABELS__L{n}"), "x"))
        .collect();
    let mut variables = vec![
        ("SIDECAR__LOGSHIP__PATHS", "/logs/app.log"),
        ("SIDECAR__LOGSHIP__SINKS__LOKI__URL", "http://loki:3100"),
    ];
    variables.extend(labels.iter().map(|(name, value)| (name.as_str(), *value)));
    let error = load(&variables).unwrap_err();
    assert!(error.contains("more than 8 labels"), "{error}");
}
