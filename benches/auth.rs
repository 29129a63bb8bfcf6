//! What credentials cost a request (scripts/bench.sh auth; goal: <= 0.3 ms added at p50):
//! - `instance/detail` in process through the whole app (credentials checked, request id, access
//!   log) and through the bare route table (no middleware at all): the difference bounds what
//!   the credential check adds;
//! - the check alone (header parsed, key hashed, cache looked up);
//! - a key's first use in a process (or after the 5 s cache): one MySQL lookup;
//! - `instance/detail` over HTTP with a key, end to end.

mod support;

use actix_web::{test, App};
use api_web::api;
use api_web::service::auth;
use diesel::connection::SimpleConnection;
use std::time::{Duration, Instant};
use support::*;

const N: usize = 5000;

fn main() {
    let (dbname, url, mut conn) = new_db();
    conn.batch_execute(
        "INSERT INTO instance (instance_id, instance_name, status, host_ip, host, cpu, memory, \
         image_id, `describe`, progress, progress_step, create_time, update_time) VALUES \
         ('i-0000be0c', 'bench', 'stopped', '127.0.0.1', 'h', 1, 128, 'ami-00000000', '', 100, \
         'running', 1, 1)",
    )
    .unwrap();
    let cfg = config(&url);
    let (ctx, addr) = serve(cfg);
    let detail = "/api/v1/instance/detail?instance_id=i-0000be0c";
    let bearer = format!("Bearer {BENCH_KEY}");

    let rt = actix_rt::System::new();
    let (mut with, mut without) = rt.block_on(async {
        let full = test::init_service(api::app(ctx.clone())).await;
        let bare =
            test::init_service(App::new().app_data(ctx.clone()).configure(api::routes)).await;
        let (mut with, mut without) = (vec![], vec![]);
        // Interleaved, so that both see the same machine; the first 200 warm up.
        for i in 0..N + 200 {
            let t = Instant::now();
            let r = test::call_service(
                &full,
                test::TestRequest::get()
                    .uri(detail)
                    .insert_header(("authorization", bearer.as_str()))
                    .to_request(),
            )
            .await;
            let a = t.elapsed();
            assert_eq!(r.status(), 200);
            let t = Instant::now();
            let r =
                test::call_service(&bare, test::TestRequest::get().uri(detail).to_request()).await;
            let b = t.elapsed();
            assert_eq!(r.status(), 200);
            if i >= 200 {
                with.push(a);
                without.push(b);
            }
        }
        (with, without)
    });
    let p50_with = report("detail, whole app (key checked)", &mut with);
    let p50_without = report("detail, bare routes (no middleware)", &mut without);
    println!(
        "added at p50 by credentials + request id + access log: {:.3} ms (goal <= 0.3 ms)",
        p50_with - p50_without
    );

    let mut check = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let auth::Credential::Key(h) = auth::credential(Some(&bearer)).unwrap() else {
            panic!("a key")
        };
        let p = auth::cached(&ctx, &h).expect("cached").unwrap();
        check.push(t.elapsed());
        assert_eq!(p.role, auth::Role::Admin);
    }
    println!(
        "the credential check alone (cached key): p50={:.1} us  p99={:.1} us",
        pct(&mut check, 0.50) * 1000.0,
        pct(&mut check, 0.99) * 1000.0
    );

    let mut first = Vec::with_capacity(500);
    for _ in 0..500 {
        let auth::Credential::Key(h) = auth::credential(Some(&bearer)).unwrap() else {
            panic!("a key")
        };
        let t = Instant::now();
        auth::lookup(&ctx, h).unwrap();
        first.push(t.elapsed());
    }
    report("a key's first use (MySQL lookup)", &mut first);

    let mut http = Http::connect(addr);
    let mut e2e = Vec::with_capacity(N);
    for i in 0..N + 200 {
        let t = Instant::now();
        let (s, _) = http.call("GET", detail, None);
        assert_eq!(s, 200);
        if i >= 200 {
            e2e.push(t.elapsed());
        }
    }
    report("detail over HTTP with a key", &mut e2e);
    std::thread::sleep(Duration::from_millis(100));
    drop_db(&dbname);
}
