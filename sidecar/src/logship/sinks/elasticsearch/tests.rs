//! Elasticsearch sink unit tests: ids, the body, per-item answers.

use super::encoder::document_id;
use super::*;
use crate::logship::event::test_event;

fn event(text: &str) -> Event {
    Event {
        end_offset: 7,
        file_id: [1; 16],
        ..test_event(text)
    }
}

fn sink() -> ElasticsearchSink {
    ElasticsearchSink {
        url: String::new(),
        index: "todo-logs-%Y.%m.%d".to_string(),
        pod: "todo-app-7f9c6d5b8-x2k4q".to_string(),
    }
}

#[test]
fn the_same_line_at_the_same_offset_gets_one_id_per_file_and_pod() {
    let line = r#"{"level":30,"msg":"started"}"#;
    let in_one_file = event(line);
    let again = event(line);
    let in_another_file = Event {
        file_id: [2; 16],
        ..event(line)
    };

    let id = document_id("pod-a", &in_one_file);

    assert_eq!(id, document_id("pod-a", &again), "sent again: the same id");
    assert_ne!(id, document_id("pod-a", &in_another_file));
    assert_ne!(id, document_id("pod-b", &in_one_file));
}

#[test]
fn records_get_a_dated_index_and_a_timestamp() {
    let record = event(r#"{"level":30,"time":"2026-03-04T05:06:07Z","msg":"a"}"#);
    let raw = event("not json");

    let body = sink().encode(&[&record, &raw]).unwrap();

    let text = String::from_utf8(body.bytes).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["create"]["_index"], "todo-logs-2026.03.04");
    assert_eq!(lines[1]["@timestamp"], "2026-03-04T05:06:07.000000Z");
    assert_eq!(lines[1]["msg"], "a");
    assert_eq!(lines[3]["message"], "not json");
    assert_ne!(lines[0]["create"]["_id"], lines[2]["create"]["_id"]);
}

#[test]
fn per_item_errors_are_retried_or_rejected() {
    let answer = br#"{"took":1,"errors":true,"items":[
        {"create":{"status":201}},
        {"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}},
        {"create":{"status":429,"error":{"type":"es_rejected_execution_exception"}}},
        {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}}]}"#;

    let verdict = sink().classify_success(answer, 4);

    assert_eq!(
        verdict,
        Verdict::Partial {
            retry: vec![2],
            reject: vec![(3, "400 mapper_parsing_exception: bad".to_string())],
        }
    );
}

#[test]
fn an_invalid_index_pattern_is_refused_naming_the_key() {
    for pattern in ["logs-%Q", ""] {
        let error = validate_index(pattern).expect_err(pattern).to_string();
        assert!(
            error.contains("logship.sinks.elasticsearch.index"),
            "{error}"
        );
    }
    assert!(validate_index("logs-%Y").is_ok());
}
