//! `hippo soak`: an open-loop load test of a running server. Requests are
//! scheduled at a fixed total rate (not "as fast as answers come back"), so a
//! slow server meets the same offered load and its latency is measured from
//! each request's scheduled time (no coordinated omission). The mix is
//! searches, single adds, revisions and hard erases of memories the soak
//! itself wrote, so the store keeps growing slowly rather than without
//! bound. It reports throughput, latency percentiles per operation, every
//! answer by status code, transport errors, and the server's resident memory
//! sampled from `/metrics` (start, end, and per interval).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::loadtest::{pct, resident_bytes_in};
use crate::synth::{ChatGenerator, Rng, Turn};

/// Arguments of `hippo soak`.
#[derive(Args)]
pub struct SoakArgs {
    /// Base URL of a running `hippo serve`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Offered requests per second, all operations together.
    #[arg(long, default_value_t = 60.0)]
    rate: f64,
    /// How long to offer load.
    #[arg(long, default_value_t = 1800)]
    duration_secs: u64,
    /// Memories written (in batches) before the soak starts.
    #[arg(long, default_value_t = 5_000)]
    preload: usize,
    /// Client threads: at most this many requests in flight; a request due
    /// while all are busy is counted as `client_backlog` and not sent.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Share of searches (the rest: 50 % adds, 25 % revisions, 25 % erases).
    #[arg(long, default_value_t = 0.6)]
    search_share: f64,
    /// Keep the store's size steady: as many erases as adds (the rest: 40 %
    /// adds, 20 % revisions, 40 % erases), so memory growth is not data.
    #[arg(long)]
    steady: bool,
    /// Seconds between resident-memory samples.
    #[arg(long, default_value_t = 30)]
    sample_secs: u64,
    /// API key, when the server requires one.
    #[arg(long)]
    key: Option<String>,
    /// Corpus seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Search,
    Add,
    Revise,
    Erase,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Search => "search",
            Kind::Add => "add",
            Kind::Revise => "revise",
            Kind::Erase => "erase",
        }
    }
}

/// One scheduled request.
struct Due {
    at: Instant,
    kind: Kind,
    text: String,
}

/// What came back, per operation.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    by_status: BTreeMap<String, u64>,
}

struct Client {
    base: String,
    key: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let r = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.set("authorization", &format!("Bearer {k}")),
            None => r,
        }
    }

    /// Sends one request; its status (or `transport`) and JSON body.
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> (String, Option<Value>) {
        let req = self.request(method, path);
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match resp {
            Ok(r) => ("200".into(), r.into_json().ok()),
            Err(ureq::Error::Status(code, _)) => (code.to_string(), None),
            Err(ureq::Error::Transport(_)) => ("transport".into(), None),
        }
    }
}

const USER: &str = "soak";

fn resident_mb(c: &Client) -> Option<f64> {
    let text = c
        .request("GET", "/metrics")
        .call()
        .ok()?
        .into_string()
        .ok()?;
    resident_bytes_in(&text).map(|b| (b as f64 / 1048576.0 * 10.0).round() / 10.0)
}

fn turn_text(t: &Turn) -> String {
    format!("{}: {}", t.speaker, t.text)
}

/// Runs the soak and prints a JSON report.
pub fn run(args: SoakArgs) -> Result<()> {
    let client = Arc::new(Client {
        base: args.base.trim_end_matches('/').to_owned(),
        key: args.key.clone(),
        agent: ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .max_idle_connections_per_host(args.clients)
            .build(),
    });
    client
        .request("GET", "/healthz")
        .call()
        .with_context(|| format!("no hippo server at {}", client.base))?;
    let mut gen = ChatGenerator::new(args.seed, 30_000);
    let mut rng = Rng::new(args.seed);
    // Preload in batches so searches have a store to search.
    let mut preload: Vec<Turn> = Vec::new();
    while preload.len() < args.preload {
        preload.extend(gen.conversation(20));
    }
    for (b, chunk) in preload.chunks(256).enumerate() {
        let items: Vec<Value> = chunk
            .iter()
            .map(|t| {
                json!({"user_id": USER, "session_id": format!("pre{b}"),
                "messages": [{"role": "user", "name": t.speaker, "content": t.text}]})
            })
            .collect();
        let (st, _) = client.send(
            "POST",
            "/v1/memories/batch",
            Some(json!({ "items": items })),
        );
        anyhow::ensure!(st == "200", "preload batch {b} answered {st}");
    }
    let rss_start = resident_mb(&client);

    let tallies: Arc<Mutex<BTreeMap<Kind, Tally>>> = Arc::default();
    // Ids the soak wrote and has not erased: revisions and erases pick here.
    let written: Arc<Mutex<Vec<String>>> = Arc::default();
    let backlog = Arc::new(AtomicU64::new(0));
    let (tx, rx) = sync_channel::<Due>(args.clients);
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..args.clients.max(1))
        .map(|w| {
            let (client, tallies, written, rx) =
                (client.clone(), tallies.clone(), written.clone(), rx.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(w as u64 + 1);
                loop {
                    let due = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(d) => d,
                        Err(_) => return,
                    };
                    // Taken out while in use, so a revision and an erase
                    // never race for one memory (a revision puts it back).
                    let take = |rng: &mut Rng| {
                        let mut ids = written.lock().unwrap_or_else(|e| e.into_inner());
                        (!ids.is_empty()).then(|| {
                            let i = rng.below(ids.len());
                            ids.swap_remove(i)
                        })
                    };
                    let (status, body) = match due.kind {
                        Kind::Search => client.send(
                            "POST",
                            "/v1/search",
                            Some(json!({"user_id": USER, "query": due.text, "top_k": 10})),
                        ),
                        Kind::Add => client.send(
                            "POST",
                            "/v1/memories",
                            Some(json!({"user_id": USER, "session_id": "soak",
                                "messages": [{"role": "user", "content": due.text}]})),
                        ),
                        Kind::Revise => match take(&mut rng) {
                            Some(id) => {
                                let answer = client.send(
                                    "PATCH",
                                    &format!("/v1/memories/{id}?user_id={USER}"),
                                    Some(json!({"content": due.text})),
                                );
                                written.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                                answer
                            }
                            None => continue,
                        },
                        Kind::Erase => match take(&mut rng) {
                            Some(id) => client.send(
                                "DELETE",
                                &format!("/v1/memories/{id}?user_id={USER}&hard=true"),
                                None,
                            ),
                            None => continue,
                        },
                    };
                    let ms = due.at.elapsed().as_secs_f64() * 1e3;
                    if due.kind == Kind::Add {
                        if let Some(id) = body.as_ref().and_then(|b| b["results"][0]["id"].as_str())
                        {
                            written
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(id.to_owned());
                        }
                    }
                    let mut t = tallies.lock().unwrap_or_else(|e| e.into_inner());
                    let tally = t.entry(due.kind).or_default();
                    tally.latencies_ms.push(ms);
                    *tally.by_status.entry(status).or_default() += 1;
                }
            })
        })
        .collect();

    // The schedule: one request every 1/rate seconds, whatever the answers do.
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.01));
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration_secs);
    let mut next_sample = start + Duration::from_secs(args.sample_secs.max(1));
    let mut samples: Vec<Value> = Vec::new();
    let mut offered = 0u64;
    let mut due_at = start;
    while due_at < end {
        let now = Instant::now();
        if due_at > now {
            std::thread::sleep(due_at - now);
        }
        if Instant::now() >= next_sample {
            let (done, codes) = {
                let t = tallies.lock().unwrap_or_else(|e| e.into_inner());
                let done: usize = t.values().map(|x| x.latencies_ms.len()).sum();
                let mut codes: BTreeMap<String, u64> = BTreeMap::new();
                for x in t.values() {
                    for (k, v) in &x.by_status {
                        *codes.entry(k.clone()).or_default() += v;
                    }
                }
                (done, codes)
            };
            samples.push(json!({
                "at_s": start.elapsed().as_secs(),
                "rss_mb": resident_mb(&client),
                "done": done,
                "by_status": codes,
            }));
            next_sample += Duration::from_secs(args.sample_secs.max(1));
        }
        let r = rng.unit();
        let kind = if r < args.search_share {
            Kind::Search
        } else {
            let w = (r - args.search_share) / (1.0 - args.search_share).max(1e-9);
            let (adds, revisions) = if args.steady { (0.4, 0.2) } else { (0.5, 0.25) };
            if w < adds {
                Kind::Add
            } else if w < adds + revisions {
                Kind::Revise
            } else {
                Kind::Erase
            }
        };
        let turn = gen.conversation(1).remove(0);
        let text = match kind {
            Kind::Search => gen.query_about(&turn),
            _ => turn_text(&turn),
        };
        offered += 1;
        if let Err(TrySendError::Full(_)) = tx.try_send(Due {
            at: due_at,
            kind,
            text,
        }) {
            backlog.fetch_add(1, Ordering::Relaxed);
        }
        due_at += interval;
    }
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    let wall = start.elapsed().as_secs_f64();
    let rss_end = resident_mb(&client);
    let tallies = Arc::try_unwrap(tallies)
        .map_err(|_| anyhow::anyhow!("workers still running"))?
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let mut ops = serde_json::Map::new();
    let mut all: Vec<f64> = Vec::new();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for (kind, mut t) in tallies {
        t.latencies_ms.sort_by(f64::total_cmp);
        all.extend(&t.latencies_ms);
        for (k, v) in &t.by_status {
            *codes.entry(k.clone()).or_default() += v;
        }
        ops.insert(
            kind.name().into(),
            json!({
                "requests": t.latencies_ms.len(),
                "p50_ms": pct(&t.latencies_ms, 0.5),
                "p95_ms": pct(&t.latencies_ms, 0.95),
                "p99_ms": pct(&t.latencies_ms, 0.99),
                "by_status": t.by_status,
            }),
        );
    }
    all.sort_by(f64::total_cmp);
    let ok = codes.get("200").copied().unwrap_or(0);
    let other_errors: u64 = codes
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "200" | "429" | "503"))
        .map(|(_, v)| v)
        .sum();
    let report = json!({
        "offered_per_s": args.rate,
        "duration_s": (wall * 10.0).round() / 10.0,
        "offered": offered,
        "client_backlog": backlog.load(Ordering::Relaxed),
        "completed_per_s": ((all.len() as f64 / wall) * 10.0).round() / 10.0,
        "ok_per_s": ((ok as f64 / wall) * 10.0).round() / 10.0,
        "p50_ms": pct(&all, 0.5),
        "p95_ms": pct(&all, 0.95),
        "p99_ms": pct(&all, 0.99),
        "by_status": codes,
        "errors_other_than_429_503": other_errors,
        "operations": ops,
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "samples": samples,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
