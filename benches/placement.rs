//! Placement decision benchmark (scripts/bench.sh placement): 100 host rows (simulated: no
//! libvirtd behind them, all online with the same capacity, a few in maintenance, a few
//! without the bridge) and 10,000 instance rows spread over them, their reservations summed.
//! Times one decision as instance create makes it: a transaction that reads the hosts,
//! filters and weighs them and reserves on the best by compare-and-set, then commits (the
//! reservation is given back after, untimed). Goal: p50 and p99 <= 2 ms. Also with 8 threads
//! deciding at once (as 8 concurrent creates, or several replicas, would), and the pure
//! filter-and-weigh step alone.

mod support;

use api_web::model::HostId;
use api_web::service::placement::{self, Need};
use diesel::connection::SimpleConnection;
use std::time::{Duration, Instant};
use support::*;

const HOSTS: usize = 100;
const INSTANCES: usize = 10_000;
const DECISIONS: usize = 2_000;

fn main() {
    let (dbname, url, mut conn) = new_db();
    let cfg = config(&url);
    let ctx = api_web::service::Ctx::new(cfg).unwrap();
    let now = api_web::db::now();
    let mut sql = String::from(
        "INSERT INTO host (host_id, host_name, uri, address, status, online, last_contact, \
         cpus, memory_mib, memory_free_mib, bridges, create_time, update_time) VALUES ",
    );
    for h in 0..HOSTS {
        let status = if h % 10 == 9 { "disabled" } else { "enabled" };
        let bridges = if h % 25 == 24 {
            "[]"
        } else {
            "[\"apiwebbr0\"]"
        };
        if h > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "('host-{h:08x}', 'h{h}', 'qemu+tcp://10.0.{}.{}/system', '10.0.0.1', '{status}', 1, \
             {now}, 64, 262144, 200000, '{bridges}', {now}, {now})",
            h / 256,
            h % 256
        ));
    }
    conn.batch_execute(&sql).unwrap();
    let t = Instant::now();
    insert_instance_rows(&mut conn, INSTANCES, "p");
    // Spread them over the hosts, unevenly (host h gets about h/50 of the average).
    conn.batch_execute(&format!(
        "UPDATE instance SET host_id = CONCAT('host-', LPAD(LOWER(HEX(CRC32(instance_id) % {HOSTS})), 8, '0'))"
    ))
    .unwrap();
    let fixed = api_web::db::hosts::resum(&mut conn).unwrap();
    println!(
        "{HOSTS} hosts, {INSTANCES} instances on {} of them, in {:.1} s",
        fixed.len(),
        t.elapsed().as_secs_f64()
    );
    let need = Need {
        vcpus: 1,
        memory_mib: 256,
        bridges: vec!["apiwebbr0".into()],
    };

    // (decision, decision with its transaction's begin and commit, host)
    let decide = |conn: &mut api_web::db::DbConn| -> (Duration, Duration, HostId) {
        let t = Instant::now();
        let mut decided = Duration::ZERO;
        let h = api_web::service::quotas::in_transaction(conn, |c| {
            let t = Instant::now();
            let h = placement::reserve(&ctx, c, &need, None);
            decided = t.elapsed();
            h
        })
        .unwrap();
        let took = t.elapsed();
        api_web::db::hosts::release(conn, &h.host_id, need.vcpus, need.memory_mib).unwrap();
        (decided, took, h.host_id)
    };
    let mut c = ctx.conn().unwrap();
    for _ in 0..50 {
        decide(&mut c);
    }
    let mut one = vec![];
    let mut committed = vec![];
    let mut chosen = std::collections::HashMap::<HostId, usize>::new();
    for _ in 0..DECISIONS {
        let (d, all, h) = decide(&mut c);
        one.push(d);
        committed.push(all);
        *chosen.entry(h).or_default() += 1;
    }
    drop(c);
    let p50 = report("placement decision (read, filter, weigh, CAS)", &mut one);
    let p99 = pct(&mut one, 0.99);
    report("  the same with its transaction's commit", &mut committed);
    println!(
        "  spread: the same emptiest host each time (given back after): {:?}",
        chosen.keys().collect::<Vec<_>>()
    );

    let mut many: Vec<Duration> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let mut c = ctx.conn().unwrap();
                    (0..DECISIONS / 8)
                        .map(|_| decide(&mut c).1)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        calls.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    report("decision with commit, 8 threads at once", &mut many);

    let hosts = api_web::db::hosts::all(&mut ctx.conn().unwrap()).unwrap();
    let mut pure = vec![];
    for _ in 0..DECISIONS {
        let t = Instant::now();
        let r = placement::rank(&hosts, &need, &ctx.cfg.placement, None).unwrap();
        std::hint::black_box(r);
        pure.push(t.elapsed());
    }
    report("filter and weigh only (100 host rows)", &mut pure);
    println!(
        "goal p50/p99 <= 2 ms: {}",
        if p50 <= 2.0 && p99 <= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    drop(ctx);
    drop_db(&dbname);
}
