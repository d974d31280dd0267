//! Scale benchmark: the operator binary against a real kube-apiserver + etcd and the fake
//! Leen, for N LeenConnections. Prints one table and writes BENCHMARKS.md.
//!
//!     export KUBEBUILDER_ASSETS=$(../shared/envtest/setup.sh)
//!     cargo bench --bench scale -- [--n 100,1000,10000] [--latency-ms 0] [--out BENCHMARKS.md]
//!     cargo bench --bench scale -- --create 100,1000 [--latency-ms 50]
//!     cargo bench --bench scale -- --throughput 1000,10000 --latency-ms 50 [--operator-only] [--reconciles 32]
//!     cargo bench --bench scale -- --rules 1000,5000 --latency-ms 50
//!
//! `--create` measures connections created from the spec instead (create -> Ready, calls
//! per resource, beside the floor of creating the same objects with no operator) and only
//! prints its table. `--throughput` runs each contestant on a fresh control plane: no
//! operator at all (the floor: `kubectl create -f`, then one `kubectl delete -l`), then the
//! operator, then plain clients on objects of the operator's Ready shape (deletion:
//! finalizer + Event, and status + finalizer + Event; creation: finalizer + Ready status);
//! it prints every time beside the floor and the API server's own profile of each
//! (`--operator-only` skips the plain clients).
//!
//! Not part of CI: N = 10 000 takes minutes.
//!
//! `--rules` measures what the deletion rules cost: the budget on (large enough) beside
//! off, and a mass deletion Leen answers with 404s, beside kubectl's floor (see [`rules`]).
//!
//! Modules: [`contestants`] (the operator and what it is measured against), [`probes`]
//! (what measures), [`report`] (what is printed), [`rules`] (the deletion rules' costs).

#[path = "../../tests/support/mod.rs"]
mod support;

mod contestants;
mod probes;
mod report;
mod rules;

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use contestants::*;
use fake_leen::FakeLeen;
use futures::{StreamExt, TryStreamExt, stream};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use leen_operator::resource::LeenConnection;
use probes::*;
use report::*;
use rules::*;
use support::*;

use uuid::Uuid;

const NS: &str = "bench";

const CREATE_PARALLELISM: usize = 32;

/// Concurrency of the plain finalizer clients: the operator's default reconciles.
const CONTRACT_CONCURRENCY: usize = 32;

/// Longest the benchmark waits for all resources to be Ready.
const BENCH_WAIT: Duration = Duration::from_secs(1800);

struct Args {
    sizes: Vec<usize>,
    latency_ms: u64,
    target_latency_ms: u64,
    concurrency: u16,
    reconciles: Option<u16>,
    out: Option<String>,
    create: Vec<usize>,
    throughput: Vec<usize>,
    rules: Vec<usize>,
    operator_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        sizes: vec![100, 1000, 10_000],
        latency_ms: 0,
        target_latency_ms: 50,
        concurrency: 16,
        reconciles: None,
        out: Some("BENCHMARKS.md".into()),
        create: Vec::new(),
        throughput: Vec::new(),
        rules: Vec::new(),
        operator_only: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--n" => {
                a.sizes = value
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            }
            "--latency-ms" => a.latency_ms = value.parse().unwrap_or(0),
            "--target-latency-ms" => a.target_latency_ms = value.parse().unwrap_or(50),
            "--concurrency" => a.concurrency = value.parse().unwrap_or(16),
            "--reconciles" => a.reconciles = value.parse().ok(),
            "--out" => a.out = (value != "-").then_some(value),
            "--operator-only" => {
                a.operator_only = true;
                i += 1;
                continue;
            }
            "--throughput" => {
                a.throughput = value
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            }
            "--rules" => {
                a.rules = value
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            }
            "--create" => {
                a.create = value
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            }
            // `cargo bench` passes --bench; ignore what is not ours.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

#[tokio::main]
async fn main() {
    let a = args();
    leen_operator::install_crypto_provider();
    if !a.throughput.is_empty() {
        let mut rows = Vec::new();
        for &n in &a.throughput {
            eprintln!("bench: throughput N={n}, Leen latency {} ms", a.latency_ms);
            rows.push(throughput(n, a.latency_ms, a.reconciles, !a.operator_only).await);
        }
        print_throughput(&rows);
        return;
    }
    if !a.rules.is_empty() {
        let mut rows = Vec::new();
        for &n in &a.rules {
            rows.push(rules_bench(n, a.latency_ms).await);
        }
        println!("{RULES_HEADER}");
        for row in rows {
            println!("{row}");
        }
        return;
    }
    if !a.create.is_empty() {
        println!(
            "| N | Leen latency ms | create -> all Ready s | floor: plain creates s | ratio | POST per resource | list per resource | GET per resource | test per resource | status writes per resource |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for &n in &a.create {
            eprintln!("bench: create N={n}, Leen latency {} ms", a.latency_ms);
            println!("{}", create_bench(n, a.latency_ms).await);
        }
        return;
    }
    let mut rows = Vec::new();
    for &n in &a.sizes {
        eprintln!("bench: N={n}, Leen latency {} ms", a.latency_ms);
        rows.push(run_one(n, a.latency_ms, a.concurrency, a.reconciles, false).await);
    }
    // The throughput target: 1 000 deletions at the target latency, beside the API floor.
    let target_n = 1000;
    eprintln!(
        "bench: N={target_n}, Leen latency {} ms (throughput target)",
        a.target_latency_ms
    );
    let target = run_one(
        target_n,
        a.target_latency_ms,
        a.concurrency,
        a.reconciles,
        true,
    )
    .await;
    eprintln!("bench: isolated deletions");
    let (isolated, delete_call) = isolated_latency(30).await;

    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Machine: {}. Operator: release build, defaults (32 concurrent reconciles, {} Leen requests in flight), real kube-apiserver v1.20.2 + etcd 3.4 on loopback, the project's fake Leen.\n",
        machine(),
        a.concurrency
    );
    let _ = writeln!(
        out,
        "Command: `KUBEBUILDER_ASSETS=$(../shared/envtest/setup.sh) cargo bench --bench scale -- --n {}`\n",
        a.sizes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(
        out,
        "| N | Leen latency ms | create -> all Ready s | GETs | status writes | start-up empty ms | start-up with N ms | RSS idle MiB | RSS steady MiB | RSS peak MiB | CPU s | delete all wall s (API marked all at s) | p50 ms | p95 ms | p99 ms | max ms | DELETE per deletion | GETs during deletion | kube writes per deletion (+ Events) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows.iter().chain(std::iter::once(&target)) {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} ({:.2}) | {} | {} | {} | {} | {:.2} | {} | {:.2} (+{:.2}) |",
            r.n,
            r.latency_ms,
            r.ready_all.as_secs_f64(),
            r.gets_create,
            r.status_writes_create,
            ms(r.startup_empty),
            ms(r.startup_loaded),
            mib(r.rss_idle_kb),
            mib(r.rss_steady_kb),
            mib(r.rss_peak_kb),
            r.cpu_s,
            r.delete_wall.as_secs_f64(),
            r.delete_marked.as_secs_f64(),
            ms(r.p50),
            ms(r.p95),
            ms(r.p99),
            ms(r.max),
            r.deletes_per,
            r.gets_during_delete,
            r.kube_writes_per,
            r.events_per
        );
    }
    let floor = target.floor.unwrap_or_default();
    let ideal = Duration::from_millis(target_n as u64 * a.target_latency_ms) / a.concurrency as u32;
    let bound = ideal.mul_f64(1.5) + floor;
    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(
        out,
        "- 1 000 deletions at Leen latency {} ms: {:.2} s; target 1.5 x (1 000 x {} ms / {}) + API floor = 1.5 x {:.2} s + {:.2} s = {:.2} s -> {}",
        a.target_latency_ms,
        target.delete_wall.as_secs_f64(),
        a.target_latency_ms,
        a.concurrency,
        ideal.as_secs_f64(),
        floor.as_secs_f64(),
        bound.as_secs_f64(),
        if target.delete_wall <= bound {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = writeln!(
        out,
        "  (API floor: {} status patches + {} finalizer patches from a plain client at concurrency {}: {:.2} s)",
        target_n,
        target_n,
        a.concurrency,
        floor.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- p50 deletion latency (deletionTimestamp seen by a watch -> gone), Leen latency 0, one deletion at a time: {} ms (target < 50 ms) -> {}; before that, the DELETE call itself takes {} ms (p50) in this API server",
        ms(isolated),
        if isolated < Duration::from_millis(50) {
            "met"
        } else {
            "NOT met"
        },
        ms(delete_call)
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "- N = {}: DELETE per deletion {:.2} (target 1), GETs during deletion {} (target 0), kube writes per deletion {:.2} (target <= 2; Events not counted: {:.2})",
            r.n, r.deletes_per, r.gets_during_delete, r.kube_writes_per, r.events_per
        );
    }
    for r in &rows {
        let _ = writeln!(
            out,
            "- N = {}: start-up to ready {} ms; the same metadata list from a plain client {} ms",
            r.n,
            ms(r.startup_loaded),
            ms(r.list_floor)
        );
    }
    if let Some(big) = rows.iter().find(|r| r.n == 10_000) {
        let _ = writeln!(
            out,
            "- RSS at N = 10 000: steady {:.1} MiB (anonymous {:.1}, code and other files {:.1}; target <= 41 MiB) -> {}; peak {:.1} MiB (target < 48 MiB) -> {}",
            mib(big.rss_steady_kb),
            mib(big.rss_steady_split_kb.0),
            mib(big.rss_steady_split_kb.1),
            if mib(big.rss_steady_kb) <= 41.0 {
                "met"
            } else {
                "NOT met"
            },
            mib(big.rss_peak_kb),
            if mib(big.rss_peak_kb) < 48.0 {
                "met"
            } else {
                "NOT met"
            }
        );
        let _ = writeln!(
            out,
            "- start-up to ready at N = 10 000: {} ms (target < 3 s) -> {}",
            ms(big.startup_loaded),
            if big.startup_loaded < Duration::from_secs(3) {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    if let Some(r) = rows.first() {
        let _ = writeln!(
            out,
            "- idle RSS with no resources: {:.1} MiB (target < 16 MiB) -> {}",
            mib(r.rss_idle_kb),
            if mib(r.rss_idle_kb) < 16.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    println!("{out}");
    if let Some(path) = a.out {
        std::fs::write(&path, &out).expect("write BENCHMARKS.md");
        eprintln!("bench: wrote {path}");
    }
}
