//! The API stays flat under stored history and idle connections.

use super::*;

/// One purge of acme's, as the tenant asks for it.
async fn purge_once(plane: &Plane, acme: &str, i: usize) -> StatusCode {
    plane
        .post("/v1/purge", acme, json!({"surrogate_key": format!("k{i}")}))
        .await
        .0
}

/// Another tenant's list of its services.
async fn list_once(plane: &Plane, other: &str) -> StatusCode {
    plane.get("/v1/services", other).await.0
}

/// Medians of `rounds` calls of `a` and of `b`, made in turn, so that the
/// machine's noise (other tests run beside this one) falls on both alike.
async fn paired_medians<A, B, FutA, FutB>(rounds: usize, mut a: A, mut b: B) -> (Duration, Duration)
where
    A: FnMut(usize) -> FutA,
    B: FnMut(usize) -> FutB,
    FutA: Future<Output = StatusCode>,
    FutB: Future<Output = StatusCode>,
{
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        for (call, samples) in [(0, &mut first), (1, &mut second)] {
            let started = Instant::now();
            let status = if call == 0 { a(i).await } else { b(i).await };
            assert!(status.is_success(), "{status}");
            samples.push(started.elapsed());
        }
    }
    first.sort_unstable();
    second.sort_unstable();
    (first[rounds / 2], second[rounds / 2])
}

/// Purges are pruned by an indexed statement in a task of their own, not
/// by a full-table delete in every purge's transaction on the one SQLite
/// connection: with 200 000 purges stored (half of them expired), a purge
/// and another tenant's API call take about what they take on a control
/// plane with none, measured in turn with it.
#[tokio::test]
async fn two_hundred_thousand_stored_purges_leave_purge_and_api_latency_flat() {
    let plane = Plane::start("sqlite").await;
    let empty = Plane::start("sqlite").await;
    let mut tokens = Vec::new();
    for plane in [&plane, &empty] {
        let [acme, other] = plane.tenants(["acme", "other"]).await;
        plane.service(&other, "web", "web.other.test").await;
        tokens.push((acme, other));
    }
    let url = format!("sqlite://{}", plane.data.path().join("cp.db").display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("database");
    let now = control_plane::store::now_ms();
    let expired = now - 2 * control_plane::store::purges::PURGE_RETENTION_MS;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) \
         INSERT INTO purges (seq, tenant_id, kind, value, created_at) \
         SELECT 1000000 + i, (SELECT id FROM tenants WHERE name = 'acme'), 'surrogate_key', 'old', \
         CASE WHEN i % 2 = 0 THEN $1 ELSE $2 END FROM n",
    )
    .bind(expired)
    .bind(now)
    .execute(&pool)
    .await
    .expect("200 000 purges stored");
    pool.close().await;

    // Under the purge rate: 50 each.
    let ((loaded_acme, loaded_other), (empty_acme, empty_other)) = (&tokens[0], &tokens[1]);
    let (purge_loaded, purge_empty) = paired_medians(
        50,
        |i| purge_once(&plane, loaded_acme, i),
        |i| purge_once(&empty, empty_acme, i),
    )
    .await;
    let (list_loaded, list_empty) = paired_medians(
        50,
        |_| list_once(&plane, loaded_other),
        |_| list_once(&empty, empty_other),
    )
    .await;
    eprintln!(
        "purge median {purge_empty:?} (none stored) vs {purge_loaded:?} (200 000); \
         another tenant's list {list_empty:?} vs {list_loaded:?}"
    );
    // The control plane runs in this process: its memory stays bounded
    // with 200 000 purges stored.
    let resident_mib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024);
    eprintln!("resident {resident_mib} MiB");
    assert!(resident_mib < 512, "{resident_mib} MiB resident");
    let flat = |empty: Duration, loaded: Duration| loaded <= empty * 3 + Duration::from_millis(2);
    assert!(
        flat(purge_empty, purge_loaded),
        "purge {purge_empty:?} -> {purge_loaded:?}"
    );
    assert!(
        flat(list_empty, list_loaded),
        "list {list_empty:?} -> {list_loaded:?}"
    );
    empty.stop().await;
    // The pruner takes the expired ones (it runs at start, then every
    // minute: run it now).
    plane.store().prune().await.expect("prune");
    let pool = sqlx::AnyPool::connect(&url).await.expect("database");
    let left: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM purges WHERE value = 'old'")
            .fetch_one(&pool)
            .await
            .expect("count"),
        0,
    );
    assert_eq!(left, 100_000, "the expired half is pruned");
}

/// A connection that sends nothing is closed after the idle read timeout;
/// the API's requests, the snapshot long-poll included, are shorter than
/// it and are served.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_read_timeout() {
    use tokio::io::AsyncReadExt;
    let plane = Plane::start_with("sqlite", |config| {
        config.idle_read_timeout = Duration::from_millis(300);
        config.snapshot_wait = Duration::from_millis(100);
    })
    .await;
    let addr = plane.base.trim_start_matches("http://").to_string();
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A long-poll that waits its whole wait gets its answer.
    let node = plane.register_node("n1").await;
    let version = plane.store().snapshot_version().await.expect("version");
    let (status, _) = plane
        .get(&format!("/v1/node/snapshot?after={version}"), &node)
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}
