//! What credentials cost a request (scripts/bench.sh auth; goal: <= 0.3 ms added at p50):
//! - `instance/detail` in process through the whole app (credentials checked, rate limits, request
//!   id, access log, metrics) and through the bare route table (the caller handed in, no
//!   middleware): the difference bounds what the credential check adds;
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
        "INSERT INTO instance (instance_id, instance_name, status, host_ip, host_id, cpu, memory, \
         image_id, `describe`, progress, progress_step, create_time, update_time) VALUES \
         ('i-0000be0c', 'bench', 'stopped', '127.0.0.1', 'host-00000000', 1, 128, 'ami-00000000', '', 100, \
         'running', 1, 1)",
    )
    .unwrap();
    let cfg = config(&url);
    let (ctx, addr) = serve(cfg);
    let detail = "/api/v1/instance/detail?instance_id=i-0000be0c";
    let bearer = format!("Bearer {BENCH_KEY}");

    let member = auth::create_key(
        &mut ctx.conn().unwrap(),
        "bench member",
        auth::Role::Member,
        "default",
        None,
    )
    .unwrap()
    .secret;
    let as_member = format!("Bearer {member}");
    let rt = actix_rt::System::new();
    let (mut with, mut without, mut by_member) = rt.block_on(async {
        let full = test::init_service(api::app(ctx.clone())).await;
        // The bare routes still need a caller: it is handed in as it is, without any check.
        let admin = auth::Principal {
            key_id: "key-0000be0c".into(),
            key_name: "bench".into(),
            role: auth::Role::Admin,
            project_id: "prj-00000000".into(),
        };
        let bare = test::init_service(
            App::new()
                .app_data(ctx.clone())
                .configure(api::routes)
                .wrap(actix_web::middleware::from_fn(
                    move |req: actix_web::dev::ServiceRequest,
                          next: actix_web::middleware::Next<_>| {
                        actix_web::HttpMessage::extensions_mut(&req).insert(admin.clone());
                        next.call(req)
                    },
                )),
        )
        .await;
        let (mut with, mut without, mut by_member) = (vec![], vec![], vec![]);
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
            let t = Instant::now();
            let r = test::call_service(
                &full,
                test::TestRequest::get()
                    .uri(detail)
                    .insert_header(("authorization", as_member.as_str()))
                    .to_request(),
            )
            .await;
            let m = t.elapsed();
            assert_eq!(r.status(), 200);
            if i >= 200 {
                with.push(a);
                without.push(b);
                by_member.push(m);
            }
        }
        (with, without, by_member)
    });
    let p50_with = report("detail, whole app (key checked)", &mut with);
    let p50_without = report("detail, bare routes (no middleware)", &mut without);
    let p50_member = report("detail, whole app, a member's key", &mut by_member);
    println!(
        "added at p50 for a member (its project checked on the row read): {:.3} ms",
        p50_member - p50_without
    );
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
