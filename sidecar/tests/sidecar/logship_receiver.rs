//! Test receivers for the log shipper's sinks, implementing the documented
//! wire formats (Loki's JSON push, Elasticsearch's `_bulk`, OTLP/HTTP logs
//! decoded with the official protobuf definitions) and recording
//! every entry; the answers can be scripted (500, 429, 400…) and the
//! receiver stopped and started again on the same port (a sink outage).

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::{Value, json};

use super::helpers::wait_for;

/// What the receiver saw and how it answers.
#[derive(Default)]
pub struct Recorded {
    /// Loki entries in arrival order: (labels, timestamp ns, line).
    pub loki: Vec<(BTreeMap<String, String>, i64, String)>,
    /// Elasticsearch documents accepted: (index, _id, document).
    pub elasticsearch: Vec<(String, String, Value)>,
    /// Statuses of every request answered, in order.
    pub statuses: Vec<u16>,
    /// Statuses to answer to the next requests (then 2xx).
    pub script: VecDeque<u16>,
    /// Protocol violations seen (asserted empty by the tests).
    pub violations: Vec<String>,
    /// `Authorization` headers seen.
    pub authorizations: Vec<String>,
    /// `Content-Encoding` headers seen (`identity` when absent).
    pub encodings: Vec<String>,
    /// OTLP log records, decoded with the official definitions.
    pub otlp: Vec<OtlpRecord>,
    /// Documents holding one of these texts get a 429 item the first time
    /// (the text is then removed: the next delivery is accepted).
    pub es_retry_once: Vec<String>,
    /// The next OTLP export answers 200 with a `partial_success` rejecting
    /// this many records (then full success); its records are not kept.
    pub otlp_reject_next: Option<i64>,
}

/// One OTLP log record, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpRecord {
    pub service_name: String,
    pub time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: String,
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
    pub attributes: BTreeMap<String, String>,
}

/// A receiver on 127.0.0.1.
pub struct Receiver {
    pub port: u16,
    pub recorded: Arc<Mutex<Recorded>>,
    handle: Option<(ServerHandle, std::thread::JoinHandle<()>)>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Receiver {
    /// A receiver on a free port.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds port 0");
        let port = listener.local_addr().expect("has an address").port();
        let mut receiver = Receiver::on(port, None);
        receiver.serve(listener);
        receiver
    }

    /// A receiver serving HTTPS with a new self-signed certificate for
    /// `localhost`, returned as PEM (the CA file a sink must trust).
    pub fn start_tls() -> (Receiver, String) {
        let (config, certificate) = todo_common::test_support::self_signed_localhost();
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds port 0");
        let port = listener.local_addr().expect("has an address").port();
        let mut receiver = Receiver::on(port, Some(Arc::new(config)));
        receiver.serve(listener);
        (receiver, certificate)
    }

    /// A port for a receiver that is not running yet (a sink that is down).
    pub fn down() -> Receiver {
        Receiver::on(super::helpers::free_port(), None)
    }

    /// A receiver of `port` that has recorded nothing and is not serving yet.
    fn on(port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        Receiver {
            port,
            recorded: Arc::new(Mutex::new(Recorded::default())),
            handle: None,
            tls,
        }
    }

    /// Starts (again) on the same port.
    pub fn resume(&mut self) {
        let listener = wait_for(
            "the receiver's port to be free",
            Duration::from_secs(10),
            || TcpListener::bind(("127.0.0.1", self.port)).ok(),
        );
        self.serve(listener);
    }

    /// Stops answering: connections are refused.
    pub fn stop(&mut self) {
        if let Some((handle, thread)) = self.handle.take() {
            futures_executor_block_on(handle.stop(false));
            let _ = thread.join();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        let recorded = self.recorded.clone();
        let tls = self.tls.clone();
        let (sender, handle_receiver) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let data = Data::from(recorded);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(256 * 1024 * 1024))
                        .route("/loki/api/v1/push", web::post().to(loki_push))
                        .route("/_bulk", web::post().to(bulk))
                        .route("/v1/logs", web::post().to(otlp_logs))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1);
                let server = match tls {
                    Some(config) => server.listen_rustls_0_23(listener, (*config).clone()),
                    None => server.listen(listener),
                }
                .expect("listens")
                .run();
                sender.send(server.handle()).expect("the test waits");
                let _ = server.await;
            });
        });
        let handle = handle_receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("the receiver starts");
        self.handle = Some((handle, thread));
    }

    /// Lines delivered to Loki, in arrival order.
    pub fn loki_lines(&self) -> Vec<String> {
        self.recorded
            .lock()
            .unwrap()
            .loki
            .iter()
            .map(|(_, _, line)| line.clone())
            .collect()
    }

    pub fn script(&self, statuses: &[u16]) {
        self.recorded
            .lock()
            .unwrap()
            .script
            .extend(statuses.iter().copied());
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.recorded.lock().unwrap().statuses.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.recorded.lock().unwrap().violations.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
    // The handle's stop future only needs polling; a tiny runtime does it.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// The scripted answer, if any, recorded.
fn scripted(recorded: &mut Recorded) -> Option<HttpResponse> {
    let status = recorded.script.pop_front()?;
    recorded.statuses.push(status);
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a valid status"));
    if status == 429 {
        response.insert_header(("Retry-After", "1"));
    }
    Some(response.body(format!("scripted {status}")))
}

/// What every endpoint does first: records the request's headers, answers
/// a scripted status if one is due, and notes a wrong content type.
fn arrive(
    request: &HttpRequest,
    recorded: &mut Recorded,
    endpoint: &str,
    content_type: &str,
) -> Option<HttpResponse> {
    authorization(request, recorded);
    if let Some(response) = scripted(recorded) {
        return Some(response);
    }
    if request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        != Some(content_type)
    {
        recorded
            .violations
            .push(format!("{endpoint}: content-type is not {content_type}"));
    }
    None
}

fn authorization(request: &HttpRequest, recorded: &mut Recorded) {
    if let Some(value) = request.headers().get("authorization") {
        recorded
            .authorizations
            .push(value.to_str().unwrap_or_default().to_string());
    }
    // actix-web has already decompressed the body; the header says how it came.
    let encoding = request
        .headers()
        .get("content-encoding")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("identity");
    recorded.encodings.push(encoding.to_string());
}

/// `POST /loki/api/v1/push`, JSON.
async fn loki_push(
    request: HttpRequest,
    body: Bytes,
    recorded: Data<Mutex<Recorded>>,
) -> HttpResponse {
    let mut recorded = recorded.lock().unwrap();
    if let Some(response) = arrive(&request, &mut recorded, "loki", "application/json") {
        return response;
    }
    let push: Value = match serde_json::from_slice(&body) {
        Ok(push) => push,
        Err(error) => {
            recorded
                .violations
                .push(format!("loki: body is not JSON: {error}"));
            recorded.statuses.push(400);
            return HttpResponse::BadRequest().finish();
        }
    };
    for stream in push["streams"].as_array().cloned().unwrap_or_default() {
        let labels: BTreeMap<String, String> = stream["stream"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .map(|(name, value)| (name.clone(), value.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        // Out-of-order entries within a stream are fine: Loki accepts them
        // within its window (`unordered_writes`).
        for value in stream["values"].as_array().cloned().unwrap_or_default() {
            let timestamp: i64 = value[0]
                .as_str()
                .and_then(|ts| ts.parse().ok())
                .unwrap_or_else(|| {
                    recorded.violations.push(format!(
                        "loki: timestamp is not a string of digits: {}",
                        value[0]
                    ));
                    0
                });
            let line = value[1].as_str().unwrap_or_default().to_string();
            recorded.loki.push((labels.clone(), timestamp, line));
        }
    }
    recorded.statuses.push(204);
    HttpResponse::NoContent().finish()
}

/// `POST /_bulk`, NDJSON. Documents whose text holds `POISON` fail with a
/// 400 item; those holding a text of `es_retry_once` get a 429 item once.
async fn bulk(request: HttpRequest, body: Bytes, recorded: Data<Mutex<Recorded>>) -> HttpResponse {
    let mut recorded = recorded.lock().unwrap();
    if let Some(response) = arrive(&request, &mut recorded, "bulk", "application/x-ndjson") {
        return response;
    }
    if !body.ends_with(b"\n") {
        recorded.violations.push("bulk: no final newline".into());
    }
    let lines: Vec<&[u8]> = body
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    if !lines.len().is_multiple_of(2) {
        recorded
            .violations
            .push("bulk: an action without its document".into());
    }
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let action: Value = serde_json::from_slice(pair[0]).unwrap_or(Value::Null);
        let document: Value = serde_json::from_slice(pair.get(1).copied().unwrap_or(b""))
            .unwrap_or_else(|_| {
                recorded
                    .violations
                    .push("bulk: a document is not JSON".into());
                Value::Null
            });
        let index = action["create"]["_index"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let id = action["create"]["_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if index.is_empty() || id.is_empty() {
            recorded
                .violations
                .push(format!("bulk: action without _index or _id: {action}"));
        }
        let status = if document.to_string().contains("POISON") {
            400
        } else if let Some(at) = recorded
            .es_retry_once
            .iter()
            .position(|text| String::from_utf8_lossy(pair[1]).contains(text.as_str()))
        {
            recorded.es_retry_once.remove(at);
            429
        } else if recorded
            .elasticsearch
            .iter()
            .any(|(_, seen, _)| *seen == id)
        {
            409
        } else {
            recorded
                .elasticsearch
                .push((index.clone(), id.clone(), document));
            201
        };
        errors |= status >= 300;
        let mut item = json!({"_index": index, "_id": id, "status": status});
        if status == 400 {
            item["error"] =
                json!({"type": "mapper_parsing_exception", "reason": "poison document"});
        } else if status == 409 {
            item["error"] =
                json!({"type": "version_conflict_engine_exception", "reason": "exists"});
        } else if status == 429 {
            item["error"] = json!({"type": "es_rejected_execution_exception", "reason": "busy"});
        }
        items.push(json!({"create": item}));
    }
    recorded.statuses.push(200);
    HttpResponse::Ok().json(json!({"took": 1, "errors": errors, "items": items}))
}

fn any_value_text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// `POST /v1/logs`, protobuf `ExportLogsServiceRequest`.
async fn otlp_logs(
    request: HttpRequest,
    body: Bytes,
    recorded: Data<Mutex<Recorded>>,
) -> HttpResponse {
    let mut recorded = recorded.lock().unwrap();
    if let Some(response) = arrive(&request, &mut recorded, "otlp", "application/x-protobuf") {
        return response;
    }
    if let Some(rejected) = recorded.otlp_reject_next.take() {
        recorded.statuses.push(200);
        let answer = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: "scripted partial success".to_string(),
            }),
        };
        return HttpResponse::Ok()
            .content_type("application/x-protobuf")
            .body(answer.encode_to_vec());
    }
    let export = match ExportLogsServiceRequest::decode(body.as_ref()) {
        Ok(export) => export,
        Err(error) => {
            recorded
                .violations
                .push(format!("otlp: not an ExportLogsServiceRequest: {error}"));
            recorded.statuses.push(400);
            return HttpResponse::BadRequest().finish();
        }
    };
    for resource_logs in export.resource_logs {
        let service_name = resource_logs
            .resource
            .iter()
            .flat_map(|resource| resource.attributes.iter())
            .find(|attribute| attribute.key == "service.name")
            .map(|attribute| any_value_text(attribute.value.as_ref()))
            .unwrap_or_default();
        for scope_logs in resource_logs.scope_logs {
            for record in scope_logs.log_records {
                recorded.otlp.push(OtlpRecord {
                    service_name: service_name.clone(),
                    time_unix_nano: record.time_unix_nano,
                    severity_number: record.severity_number,
                    severity_text: record.severity_text.clone(),
                    body: any_value_text(record.body.as_ref()),
                    trace_id: hex_string(&record.trace_id),
                    span_id: hex_string(&record.span_id),
                    attributes: record
                        .attributes
                        .iter()
                        .map(|attribute| {
                            (
                                attribute.key.clone(),
                                any_value_text(attribute.value.as_ref()),
                            )
                        })
                        .collect(),
                });
            }
        }
    }
    recorded.statuses.push(200);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportLogsServiceResponse::default().encode_to_vec())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Numbers of the numbered lines (`"n":123` in a record, or `line 123`).
pub fn numbers(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|line| {
            let start = line
                .find("\"n\":")
                .map(|at| at + 4)
                .or_else(|| line.find("line ").map(|at| at + 5))?;
            let digits: String = line[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// (missing numbers of 0..count, duplicated deliveries).
pub fn tally(lines: &[String], count: u64) -> (Vec<u64>, usize) {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for number in numbers(lines) {
        *seen.entry(number).or_default() += 1;
    }
    let missing = (0..count)
        .filter(|number| !seen.contains_key(number))
        .collect();
    let duplicates = seen.values().map(|times| times - 1).sum();
    (missing, duplicates)
}
