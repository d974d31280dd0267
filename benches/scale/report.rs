//! The figures as printed: a row per N, the throughput table beside the floors.

use super::*;

#[derive(Default, Clone)]
pub(crate) struct Row {
    pub(crate) n: usize,
    pub(crate) latency_ms: u64,
    pub(crate) ready_all: Duration,
    pub(crate) gets_create: usize,
    pub(crate) status_writes_create: f64,
    pub(crate) startup_empty: Duration,
    pub(crate) startup_loaded: Duration,
    pub(crate) list_floor: Duration,
    pub(crate) rss_idle_kb: u64,
    pub(crate) rss_steady_kb: u64,
    /// Of the steady RSS: anonymous memory (the heap, stacks) and file pages (the code).
    pub(crate) rss_steady_split_kb: (u64, u64),
    pub(crate) rss_peak_kb: u64,
    pub(crate) cpu_s: f64,
    pub(crate) delete_wall: Duration,
    pub(crate) delete_marked: Duration,
    pub(crate) p50: Duration,
    pub(crate) p95: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) deletes_per: f64,
    pub(crate) gets_during_delete: usize,
    pub(crate) kube_writes_per: f64,
    pub(crate) events_per: f64,
    pub(crate) floor: Option<Duration>,
}

pub(crate) fn print_throughput(rows: &[Throughput]) {
    println!(
        "| N | Leen latency ms | floor: kubectl create s | plain client: finalizer + Ready status s (ratio) | create -> all Ready s | ratio | floor: kubectl delete, all gone s | plain client: finalizer + Event s (ratio) | plain client: status + finalizer + Event s (ratio) | operator: delete -> all gone s | ratio | DELETE per deletion | Events per deletion | RSS steady MiB | RSS peak MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.2} ({:.2}x) | {:.2} | {:.2}x | {:.2} | {:.2} ({:.2}x) | {:.2} ({:.2}x) | {:.2} | {:.2}x | {:.2} | {:.2} | {:.1} | {:.1} |",
            r.n,
            r.latency_ms,
            r.floor_create.as_secs_f64(),
            r.minimum_create.as_secs_f64(),
            r.minimum_create.as_secs_f64() / r.floor_create.as_secs_f64().max(0.001),
            r.ready.as_secs_f64(),
            r.ready.as_secs_f64() / r.floor_create.as_secs_f64().max(0.001),
            r.floor_delete.as_secs_f64(),
            r.reference.as_secs_f64(),
            r.reference.as_secs_f64() / r.floor_delete.as_secs_f64().max(0.001),
            r.minimum.as_secs_f64(),
            r.minimum.as_secs_f64() / r.floor_delete.as_secs_f64().max(0.001),
            r.delete.as_secs_f64(),
            r.delete.as_secs_f64() / r.floor_delete.as_secs_f64().max(0.001),
            r.deletes_per,
            r.events_per,
            mib(r.rss_steady_kb),
            mib(r.rss_peak_kb),
        );
    }
    println!(
        "\nAPI server profile, per object (requests by verb and resource, with the API server's summed handling time):\n"
    );
    for r in rows {
        println!(
            "- N = {} floor deletion: {}",
            r.n,
            r.floor_profile.describe()
        );
        println!(
            "- N = {} plain client, status + finalizer + Event: {}",
            r.n,
            r.minimum_profile.describe()
        );
        println!(
            "- N = {} operator creation: {}",
            r.n,
            r.create_profile.describe()
        );
        println!(
            "- N = {} operator deletion: {}",
            r.n,
            r.delete_profile.describe()
        );
    }
}
