//! Prometheus metrics of this process (`GET /metrics`, admins): HTTP requests and their
//! latency by route and status, operations by kind and outcome with their durations; and,
//! gathered when scraped, resources by status, backend health, pool usage and what
//! reconciliation did.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets of HTTP requests, in seconds (1 ms .. 10 s).
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Duration buckets of operations, in seconds (10 ms .. 10 min).
const OP_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    operations: IntCounterVec,
    operation_seconds: HistogramVec,
    /// Filled at each scrape.
    pub resources: IntGaugeVec,
    pub backend_up: IntGaugeVec,
    pub pool_connections: IntGaugeVec,
    pub reconcile: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("api_web".into()), None).expect("a valid metrics prefix");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route, method and status",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let operations = IntCounterVec::new(
            Opts::new(
                "operations_total",
                "Operations ended by this process, by kind and outcome (done, failed, handed_over)",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let operation_seconds = HistogramVec::new(
            HistogramOpts::new(
                "operation_duration_seconds",
                "Duration of operations ended by this process, by kind and outcome",
            )
            .buckets(OP_BUCKETS.to_vec()),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let resources = IntGaugeVec::new(
            Opts::new("resources", "Rows by resource and status (all projects)"),
            &["resource", "status"],
        )
        .expect("valid metric");
        let backend_up = IntGaugeVec::new(
            Opts::new("backend_up", "1 while the backend answers its probe"),
            &["backend"],
        )
        .expect("valid metric");
        let pool_connections = IntGaugeVec::new(
            Opts::new("db_pool_connections", "MySQL pool connections by state"),
            &["state"],
        )
        .expect("valid metric");
        let reconcile = IntGaugeVec::new(
            Opts::new(
                "reconcile",
                "Reconciliation since start: passes, repairs, findings reported, orphans removed, last pass microseconds",
            ),
            &["what"],
        )
        .expect("valid metric");
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_seconds.clone()),
            Box::new(operations.clone()),
            Box::new(operation_seconds.clone()),
            Box::new(resources.clone()),
            Box::new(backend_up.clone()),
            Box::new(pool_connections.clone()),
            Box::new(reconcile.clone()),
        ] {
            registry.register(c).expect("each metric registered once");
        }
        Metrics {
            registry,
            http_requests,
            http_seconds,
            operations,
            operation_seconds,
            resources,
            backend_up,
            pool_connections,
            reconcile,
        }
    }

    /// One answered request; `route` is the route's pattern (`unmatched` for none), never the
    /// raw path, so that ids do not make a series each.
    pub fn http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_seconds
            .with_label_values(&labels)
            .observe(seconds);
    }

    /// One ended operation.
    pub fn operation(&self, kind: &str, outcome: &str, seconds: f64) {
        self.operations.with_label_values(&[kind, outcome]).inc();
        self.operation_seconds
            .with_label_values(&[kind, outcome])
            .observe(seconds);
    }

    /// Everything, in Prometheus' text format.
    pub fn render(&self) -> Result<String, String> {
        let mut out = vec![];
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}
