//! Operator benchmark (issue 4, item 7), run by `bench/operator.sh`: the real
//! API server, one operator and three proxies, as in the e2e tests.
//!
//! 1. Apply → served: `kubectl apply` of a one-line route edit, timed until
//!    every proxy's data port answers from the new upstream model; repeated.
//! 2. 1,000 routes: time until all three proxies run a table with every route,
//!    then repeated edits of one route among the 1,000 (compile of the whole
//!    table plus its distribution), with the operator's own compile time from
//!    `switchyard_operator_compile_duration_seconds`.
//!
//! ```text
//! operator_bench [--edits N] [--routes N] [--big-edits N] [--out FILE]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness: a failed step should panic")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use support::{Env, Proxy, World, eventually, route};

struct Options {
    edits: usize,
    routes: usize,
    big_edits: usize,
    out: Option<String>,
}

fn options() -> Options {
    let mut options = Options { edits: 50, routes: 1_000, big_edits: 20, out: None };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--edits" => options.edits = value().parse().expect("--edits N"),
            "--routes" => options.routes = value().parse().expect("--routes N"),
            "--big-edits" => options.big_edits = value().parse().expect("--big-edits N"),
            "--out" => options.out = Some(value()),
            other => panic!("unknown flag {other}: use --edits N, --routes N, --big-edits N, --out FILE"),
        }
    }
    options
}

/// Applies `yaml` and returns how long until every proxy answers `alias` from `model`
/// (and how long kubectl itself took).
async fn apply_until_served(
    env: &Env,
    proxies: &[Proxy],
    yaml: &str,
    alias: &str,
    model: &str,
) -> (Duration, Duration) {
    let started = Instant::now();
    env.apply_ok(yaml).await;
    let kubectl = started.elapsed();
    let mut waiting: Vec<&Proxy> = proxies.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for proxy in waiting {
            if proxy.serves(alias, model).await.is_err() {
                still.push(proxy);
            }
        }
        waiting = still;
        assert!(started.elapsed() < Duration::from_secs(60), "{alias} not served from {model} within 60 s");
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    (started.elapsed(), kubectl)
}

/// The p-th percentile (0..=100) of `samples`, nearest rank.
fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn summary(samples: &[Duration]) -> String {
    format!(
        "n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        ms(percentile(samples, 50)),
        ms(percentile(samples, 99)),
        ms(percentile(samples, 100))
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// `_sum` and `_count` of the operator's compile-duration histogram.
async fn compile_totals(world: &World) -> (f64, f64) {
    let (_, text) = world.operator.admin_get("/metrics").await.unwrap();
    let value = |suffix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("switchyard_operator_compile_duration_seconds_{suffix} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    let world = World::start("bench", 3).await;
    let mut report = String::new();
    let _ = writeln!(report, "# switchyard-operator benchmark\n");
    let _ = writeln!(
        report,
        "operator {}\nproxy    {}\n",
        support::operator_binary().display(),
        support::proxy_binary().display()
    );

    // 1. apply -> served, one small route.
    world.env.apply_ok(&route("chat", "chat", &[("t", "openai", "model-0", 1)])).await;
    for proxy in &world.proxies {
        eventually("first table", Duration::from_secs(60), || proxy.serves("chat", "model-0")).await;
    }
    let (mut served, mut kubectl) = (Vec::new(), Vec::new());
    for i in 1..=options.edits {
        let model = format!("model-{i}");
        let yaml = route("chat", "chat", &[("t", "openai", &model, 1)]);
        let (all, apply) = apply_until_served(&world.env, &world.proxies, &yaml, "chat", &model).await;
        served.push(all);
        kubectl.push(apply);
    }
    let _ = writeln!(report, "## kubectl apply -> all 3 proxies serve the edit (1 route)\n");
    let _ = writeln!(report, "- apply -> served: {}", summary(&served));
    let _ = writeln!(report, "- of which kubectl apply itself: {}", summary(&kubectl));
    let after: Vec<Duration> = served.iter().zip(&kubectl).map(|(all, apply)| all.saturating_sub(*apply)).collect();
    let _ = writeln!(report, "- from kubectl returning to served: {}", summary(&after));
    let verdict = if percentile(&served, 99) < Duration::from_secs(1) { "PASS" } else { "FAIL" };
    let _ = writeln!(report, "- target p99 < 1 s: {verdict}\n");
    print!("{report}");

    // 2. 1,000 routes.
    let mut yaml = String::new();
    for i in 0..options.routes {
        yaml.push_str(&route(&format!("r{i}"), &format!("r{i}"), &[("t", "openai", "model-x", 1)]));
    }
    let started = Instant::now();
    let out = world.env.kubectl(&["apply", "--server-side", "-f", "-"], Some(&yaml)).await;
    assert!(out.success(), "{out}");
    let created = started.elapsed();
    let last = format!("r{}", options.routes - 1);
    let mut tables = Vec::new();
    for proxy in &world.proxies {
        eventually(&format!("{} serves all routes", proxy.name), Duration::from_secs(300), || async {
            let (_, text) = proxy.admin_get("/debug/table").await?;
            let table: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let n = table["table"]["routes"].as_object().map_or(0, serde_json::Map::len);
            if n > options.routes { Ok(()) } else { Err(format!("{n} routes")) }
        })
        .await;
        tables.push(proxy.admin_get("/debug/table").await.unwrap().1.len());
    }
    let all_served = started.elapsed();
    let (sum0, count0) = compile_totals(&world).await;
    let mut big = Vec::new();
    for i in 1..=options.big_edits {
        let model = format!("model-big-{i}");
        let yaml = route(&last, &last, &[("t", "openai", &model, 1)]);
        big.push(apply_until_served(&world.env, &world.proxies, &yaml, &last, &model).await.0);
    }
    let (sum1, count1) = compile_totals(&world).await;
    let compiles = count1 - count0;
    let mut part = String::new();
    let _ = writeln!(part, "## {} routes across 3 proxies\n", options.routes + 1);
    let _ =
        writeln!(part, "- kubectl apply --server-side of {} routes: {:.1} s", options.routes, created.as_secs_f64());
    let _ = writeln!(part, "- from that apply until all 3 proxies run every route: {:.1} s", all_served.as_secs_f64());
    let _ = writeln!(part, "- /debug/table size: {} bytes", tables.iter().max().unwrap_or(&0));
    let _ = writeln!(part, "- edit one route among them -> all 3 proxies serve it: {}", summary(&big));
    if compiles > 0.0 {
        let _ = writeln!(
            part,
            "- operator compile time (its histogram, {compiles} compiles during the edits): mean {:.1} ms",
            (sum1 - sum0) / compiles * 1_000.0
        );
    }
    print!("{part}");
    report.push_str(&part);
    if let Some(path) = options.out {
        std::fs::write(&path, &report).unwrap();
        println!("\n(written to {path})");
    }
}
