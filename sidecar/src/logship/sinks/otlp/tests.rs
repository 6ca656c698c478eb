//! OTLP sink unit tests: reading a partial success.

use super::proto::ExportLogsPartialSuccess;
use super::*;

fn sink() -> OtlpSink {
    OtlpSink::new(&OtlpSettings {
        url: Some("http://collector:4318".to_string()),
        service_name: "todo-app".to_string(),
        http: crate::logship::sinks::HttpSettings {
            gzip: false,
            auth: None,
            token_file: None,
            username: None,
            password_file: None,
            ca_file: None,
        },
    })
    .expect("a valid sink")
}

#[test]
fn a_partial_success_names_how_many_records_were_rejected() {
    let answer = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 2,
            error_message: "too old".to_string(),
        }),
    }
    .encode_to_vec();

    let verdict = sink().classify_success(&answer, 5);

    assert_eq!(
        verdict,
        Verdict::PartiallyRejected {
            rejected: 2,
            answer: "partial success: 2 of 5 records rejected: too old".to_string(),
        }
    );
}

#[test]
fn an_empty_answer_or_zero_rejected_is_a_full_delivery() {
    let zero = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 0,
            error_message: String::new(),
        }),
    }
    .encode_to_vec();

    assert_eq!(sink().classify_success(&[], 5), Verdict::Delivered);
    assert_eq!(sink().classify_success(&zero, 5), Verdict::Delivered);
}
