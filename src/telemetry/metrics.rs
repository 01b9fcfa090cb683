//! Prometheus metrics: one process-wide recorder (`metrics` facade, rendered as text by
//! `metrics-exporter-prometheus`), request counters and latency histograms recorded by a
//! router layer, and gauges sampled from the service when a scraper asks (`GET /metrics`).
//!
//! The exporter's own HTTP listener is off: the text is served by the daemon itself, on its
//! socket and on the optional loopback address `[metrics] listen`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::service::{ComponentHealth, Vault};

/// Latency buckets in seconds, from a cached read (tens of µs) to a slow remote backend.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle. `None` when
/// another recorder was installed first (an embedding program's), in which case metrics go
/// there and `GET /metrics` answers an empty page.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(LATENCY_BUCKETS) {
                Ok(builder) => builder,
                // Only an empty bucket list fails; without buckets histograms become summaries.
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "envault_http_requests_total",
        "Requests answered, by route and status."
    );
    describe_histogram!(
        "envault_http_request_duration_seconds",
        Unit::Seconds,
        "Time from request to answer, by route."
    );
    describe_histogram!(
        "envault_group_commit_size",
        Unit::Count,
        "Writers acknowledged by one store flush."
    );
    describe_histogram!(
        "envault_group_commit_duration_seconds",
        Unit::Seconds,
        "Duration of one group-commit store flush."
    );
    describe_counter!(
        "envault_dek_cache_hits_total",
        "DEK lookups served from memory."
    );
    describe_counter!(
        "envault_dek_cache_misses_total",
        "DEK lookups that unwrapped through the root-key backend."
    );
    describe_gauge!("envault_dek_cache_size", "DEKs held unwrapped in memory.");
    describe_counter!(
        "envault_audit_fsyncs_total",
        "fdatasync calls of the activity log."
    );
    describe_counter!(
        "envault_audit_events_total",
        "Events written to the activity log."
    );
    describe_gauge!("envault_keys", "Root keys by state.");
    describe_gauge!("envault_rotation_jobs", "Key rotation jobs by state.");
    describe_gauge!(
        "envault_rotation_deks_done",
        "DEKs rewrapped so far by the key's running or last rotation."
    );
    describe_gauge!(
        "envault_rotation_deks_total",
        "DEKs the key's running or last rotation has to rewrap."
    );
    describe_gauge!(
        "envault_component_up",
        "1 when the component (store, key_backend, activity_log) answered its last probe."
    );
}

/// Router layer: counts every answer by matched route (the pattern, never the raw path,
/// which holds names and record keys) and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    match route_handles(route, &method) {
        Some(handles) => {
            handles.duration.record(elapsed);
            handles.answered(status).increment(1);
        }
        None => {
            record_uncached(route, method.as_str(), status, elapsed);
        }
    }
    response
}

/// A route's (and method's) metric handles. Building a labelled handle through the facade
/// allocates the labels and hashes them in the recorder's registry, several thousand
/// instructions per request; a handle made once and kept records directly.
struct RouteHandles {
    route: String,
    method: &'static str,
    duration: metrics::Histogram,
    /// One counter per status seen on this route (a handful).
    answers: RwLock<Vec<(u16, metrics::Counter)>>,
}

impl RouteHandles {
    fn answered(&self, status: u16) -> metrics::Counter {
        let known = read(&self.answers)
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, c)| c.clone());
        if let Some(counter) = known {
            return counter;
        }
        let counter = metrics::counter!(
            "envault_http_requests_total",
            "route" => self.route.clone(),
            "method" => self.method,
            "status" => status.to_string()
        );
        let mut answers = self.answers.write().unwrap_or_else(|p| p.into_inner());
        if !answers.iter().any(|(s, _)| *s == status) {
            answers.push((status, counter.clone()));
        }
        counter
    }
}

/// Route pattern → its handles per method. Bounded: patterns are the router's, methods the
/// standard ones (anything else is recorded without a cache).
type RouteTable = RwLock<HashMap<String, Vec<Arc<RouteHandles>>>>;
static ROUTES: OnceLock<RouteTable> = OnceLock::new();

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// The cached handles of (route, method); `None` while this module's recorder is not the
/// installed one (a handle made then would stay a no-op) or for a non-standard method.
fn route_handles(route: &str, method: &Method) -> Option<Arc<RouteHandles>> {
    if !matches!(HANDLE.get(), Some(Some(_))) {
        return None;
    }
    let method = standard_method(method)?;
    let table = ROUTES.get_or_init(RouteTable::default);
    if let Some(found) = read(table)
        .get(route)
        .and_then(|by_method| by_method.iter().find(|h| h.method == method))
    {
        return Some(Arc::clone(found));
    }
    let handles = Arc::new(RouteHandles {
        route: route.to_owned(),
        method,
        duration: metrics::histogram!(
            "envault_http_request_duration_seconds",
            "route" => route.to_owned(),
            "method" => method
        ),
        answers: RwLock::new(Vec::new()),
    });
    let mut table = table.write().unwrap_or_else(|p| p.into_inner());
    let by_method = table.entry(route.to_owned()).or_default();
    match by_method.iter().find(|h| h.method == method) {
        Some(found) => Some(Arc::clone(found)),
        None => {
            by_method.push(Arc::clone(&handles));
            Some(handles)
        }
    }
}

fn standard_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => return None,
    })
}

fn record_uncached(route: &str, method: &str, status: u16, elapsed: f64) {
    metrics::histogram!(
        "envault_http_request_duration_seconds",
        "route" => route.to_owned(),
        "method" => method.to_owned()
    )
    .record(elapsed);
    metrics::counter!(
        "envault_http_requests_total",
        "route" => route.to_owned(),
        "method" => method.to_owned(),
        "status" => status.to_string()
    )
    .increment(1);
}

/// Samples the service's counters and states, then renders the page.
pub fn render(vault: &Vault, components: &[ComponentHealth]) -> String {
    let Some(handle) = install() else {
        return String::new();
    };
    let cache = vault.dek_cache_stats();
    metrics::counter!("envault_dek_cache_hits_total").absolute(cache.hits);
    metrics::counter!("envault_dek_cache_misses_total").absolute(cache.misses);
    metrics::gauge!("envault_dek_cache_size").set(cache.size as f64);
    let audit = vault.audit_log().sync_stats();
    metrics::counter!("envault_audit_fsyncs_total").absolute(audit.fsyncs);
    metrics::counter!("envault_audit_events_total").absolute(audit.written_events);
    for (state, count) in vault.key_state_counts() {
        metrics::gauge!("envault_keys", "state" => state).set(count as f64);
    }
    let rotations = vault.rotation_snapshot();
    for state in ["pending", "running", "completed", "failed"] {
        let n = rotations.iter().filter(|(_, s)| s.state == state).count();
        metrics::gauge!("envault_rotation_jobs", "state" => state).set(n as f64);
    }
    for (key, status) in &rotations {
        let key = key.to_string();
        metrics::gauge!("envault_rotation_deks_done", "key_id" => key.clone())
            .set(status.done as f64);
        metrics::gauge!("envault_rotation_deks_total", "key_id" => key).set(status.total as f64);
    }
    for component in components {
        metrics::gauge!("envault_component_up", "component" => component.component.clone())
            .set(if component.ok { 1.0 } else { 0.0 });
    }
    handle.run_upkeep();
    handle.render()
}
