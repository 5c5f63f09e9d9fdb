//! Prometheus metrics: request counts and latencies per route and status.
//!
//! Background work is metered where it runs (job workers, maintenance) into
//! the same `Metrics`; gauges that mirror stored state (jobs by state, LLM
//! totals) and the process's memory (resident size; glibc's heap in use,
//! which a leak grows, and free but kept, which retention grows) are caught
//! up at scrape time. Refusals by authentication and access are counted by
//! reason.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Matched route template, e.g. `/v1/memories/{id}`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Matched route template.
    pub route: String,
}

/// Labels of LLM usage.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmLabels {
    /// `extract`, `decide`, `summary` or `profile`.
    pub operation: String,
}

/// Labels of an authentication failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// `missing`, `malformed`, `invalid`, `revoked`, `expired` or `forbidden`.
    pub reason: String,
}

/// Labels of a request refused to protect the server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `rate_limited` (429), `overload` or `timeout` (503).
    pub reason: String,
}

/// Labels of an MCP tool call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpLabels {
    /// The tool, e.g. `search_memory`.
    pub tool: String,
    /// `ok`, `error` (a result with `isError`) or `protocol_error`.
    pub outcome: String,
}

/// Labels of a background job run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// `ran` (a job was claimed and run; retries included) or `error` (the
    /// worker could not claim or record one).
    pub outcome: String,
}

/// Labels of the job queue gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobStateLabels {
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency in seconds by route.
    pub latency: Family<RouteLabels, Histogram>,
    /// Memories written.
    pub memories_written: Counter,
    /// Requests refused by authentication (401) or access (403), by reason.
    pub auth_failures: Family<AuthLabels, Counter>,
    /// Requests refused to protect the server, by reason.
    pub shed: Family<ShedLabels, Counter>,
    /// MCP tool calls by tool and outcome.
    pub mcp_calls: Family<McpLabels, Counter>,
    /// Background job runs by outcome.
    pub job_runs: Family<JobLabels, Counter>,
    /// Seconds a job run took.
    pub job_seconds: Histogram,
    /// Maintenance passes by outcome (`ok`, `error`).
    pub maintenance_passes: Family<JobLabels, Counter>,
    /// Memories archived by maintenance (expired or faded).
    pub maintenance_archived: Counter,
    /// Jobs by state over the open tenants, refreshed at every scrape.
    jobs: Family<JobStateLabels, Gauge>,
    /// Resident memory of this process, refreshed at every scrape.
    resident_bytes: Gauge,
    /// Heap bytes in live allocations, refreshed at every scrape (glibc).
    heap_in_use_bytes: Gauge,
    /// Heap bytes freed but kept by the allocator, refreshed at every
    /// scrape (glibc): with the in-use bytes, tells a leak from retention.
    heap_free_bytes: Gauge,
    /// Resident bytes given back to the system by periodic trims.
    pub memory_trimmed_bytes: Counter,
    /// LLM calls, tokens and unusable answers per operation, caught up
    /// with the engine's meter at every scrape.
    llm_calls: Family<LlmLabels, Counter>,
    llm_prompt_tokens: Family<LlmLabels, Counter>,
    llm_completion_tokens: Family<LlmLabels, Counter>,
    llm_unusable: Family<LlmLabels, Counter>,
}

/// Resident set size of this process in bytes (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Every Linux platform Hippo targets uses 4 KiB pages.
    Some(pages * 4096)
}

/// The allocator's view of the heap: (bytes in live allocations, bytes
/// free but kept), from glibc's `mallinfo2` (`None` elsewhere).
pub fn heap_bytes() -> Option<(i64, i64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's own statistics.
        let m = unsafe { libc::mallinfo2() };
        let in_use = m.uordblks.saturating_add(m.hblkhd);
        Some((
            i64::try_from(in_use).unwrap_or(i64::MAX),
            i64::try_from(m.fordblks).unwrap_or(i64::MAX),
        ))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hippo");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let memories_written = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "memories_written",
            "Memories written",
            memories_written.clone(),
        );
        let resident = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            resident.clone(),
        );
        let heap_in_use = Gauge::default();
        registry.register(
            "heap_in_use_bytes",
            "Heap bytes in live allocations (glibc mallinfo2)",
            heap_in_use.clone(),
        );
        let heap_free = Gauge::default();
        registry.register(
            "heap_free_bytes",
            "Heap bytes freed but kept by the allocator (glibc mallinfo2)",
            heap_free.clone(),
        );
        let memory_trimmed = Counter::default();
        registry.register(
            "memory_trimmed_bytes",
            "Resident bytes given back to the system by periodic malloc_trim",
            memory_trimmed.clone(),
        );
        let llm_calls = Family::<LlmLabels, Counter>::default();
        let llm_prompt_tokens = Family::<LlmLabels, Counter>::default();
        let llm_completion_tokens = Family::<LlmLabels, Counter>::default();
        let llm_unusable = Family::<LlmLabels, Counter>::default();
        registry.register(
            "llm_calls",
            "LLM completions by operation",
            llm_calls.clone(),
        );
        registry.register(
            "llm_prompt_tokens",
            "LLM prompt tokens by operation",
            llm_prompt_tokens.clone(),
        );
        registry.register(
            "llm_completion_tokens",
            "LLM answer tokens by operation",
            llm_completion_tokens.clone(),
        );
        registry.register(
            "llm_unusable_answers",
            "LLM answers that could not be used (unreadable or ungrounded) by operation",
            llm_unusable.clone(),
        );
        let auth_failures = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by authentication or access, by reason",
            auth_failures.clone(),
        );
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "shed_requests",
            "Requests refused by rate limits, the in-flight cap or the deadline, by reason",
            shed.clone(),
        );
        let mcp_calls = Family::<McpLabels, Counter>::default();
        registry.register(
            "mcp_tool_calls",
            "MCP tool calls by tool and outcome",
            mcp_calls.clone(),
        );
        let job_runs = Family::<JobLabels, Counter>::default();
        registry.register(
            "job_runs",
            "Background job runs (LLM extraction, consolidation) by outcome",
            job_runs.clone(),
        );
        let job_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "job_run_duration_seconds",
            "Duration of background job runs",
            job_seconds.clone(),
        );
        let jobs = Family::<JobStateLabels, Gauge>::default();
        registry.register("jobs", "Background jobs by state", jobs.clone());
        let maintenance_passes = Family::<JobLabels, Counter>::default();
        registry.register(
            "maintenance_passes",
            "Maintenance passes by outcome",
            maintenance_passes.clone(),
        );
        let maintenance_archived = Counter::default();
        registry.register(
            "maintenance_archived",
            "Memories archived by maintenance (expired or faded)",
            maintenance_archived.clone(),
        );
        Metrics {
            job_runs,
            job_seconds,
            jobs,
            maintenance_passes,
            maintenance_archived,
            mcp_calls,
            shed,
            auth_failures,
            llm_calls,
            llm_prompt_tokens,
            llm_completion_tokens,
            llm_unusable,
            registry: Mutex::new(registry),
            requests,
            latency,
            memories_written,
            resident_bytes: resident,
            heap_in_use_bytes: heap_in_use,
            heap_free_bytes: heap_free,
            memory_trimmed_bytes: memory_trimmed,
        }
    }

    /// The text exposition format, with the LLM counters caught up with
    /// `llm` (the engine's running totals) and the job gauge set from
    /// `jobs` (counts by state).
    pub fn encode(
        &self,
        llm: &[(&'static str, hippo::llm::LlmTotals)],
        jobs: Option<hippo::jobs::JobCounts>,
    ) -> String {
        if let Some(j) = jobs {
            for (state, n) in [
                ("pending", j.pending),
                ("running", j.running),
                ("done", j.done),
                ("failed", j.failed),
            ] {
                self.jobs
                    .get_or_create(&JobStateLabels {
                        state: state.into(),
                    })
                    .set(n as i64);
            }
        }
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(rss);
        }
        if let Some((in_use, free)) = heap_bytes() {
            self.heap_in_use_bytes.set(in_use);
            self.heap_free_bytes.set(free);
        }
        // Held while catching up, so two scrapes never add the same delta.
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        for (op, t) in llm {
            let labels = LlmLabels {
                operation: (*op).to_owned(),
            };
            let catch_up = |family: &Family<LlmLabels, Counter>, total: u64| {
                let c = family.get_or_create(&labels);
                c.inc_by(total.saturating_sub(c.get()));
            };
            catch_up(&self.llm_calls, t.calls);
            catch_up(&self.llm_prompt_tokens, t.prompt_tokens);
            catch_up(&self.llm_completion_tokens, t.completion_tokens);
            catch_up(&self.llm_unusable, t.unusable);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
