//! sql/api_web.sql and the migrations create the same schema; `migrate` adopts a database made by
//! the script.

use crate::common::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

#[derive(QueryableByName, Debug, PartialEq)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// Every column, index and table option of a database, as comparable lines.
fn describe(conn: &mut MysqlConnection, db: &str) -> Vec<String> {
    let queries = [
        "SELECT CONCAT_WS('|', TABLE_NAME, ENGINE, TABLE_COLLATION) AS line FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> '__diesel_schema_migrations'",
        "SELECT CONCAT_WS('|', TABLE_NAME, ORDINAL_POSITION, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, \
           IFNULL(COLUMN_DEFAULT, 'NULL'), IFNULL(CHARACTER_SET_NAME, '-'), IFNULL(COLLATION_NAME, '-'), EXTRA) AS line \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> '__diesel_schema_migrations'",
        "SELECT CONCAT_WS('|', TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME) AS line \
         FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> '__diesel_schema_migrations'",
    ];
    let mut out = vec![];
    for q in queries {
        let rows: Vec<Line> = diesel::sql_query(q).bind::<Text, _>(db).load(conn).unwrap();
        out.extend(rows.into_iter().map(|l| l.line));
    }
    out.sort();
    out
}

fn script_for(db: &str) -> String {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/api_web.sql")).unwrap();
    assert!(text.contains("CREATE DATABASE IF NOT EXISTS `api_web`"));
    text.replace("`api_web`", &format!("`{db}`"))
}

#[test]
fn script_and_migrations_create_identical_schemas() {
    let a = TestDb::migrated();
    let b = TestDb::new();
    b.conn().batch_execute(&script_for(&b.name)).unwrap();
    let mut conn = a.conn();
    let da = describe(&mut conn, &a.name);
    let db = describe(&mut conn, &b.name);
    assert!(da.len() > 60, "{da:?}");
    for t in ["image|", "volume|", "network_interface|", "instance|"] {
        assert!(da.iter().any(|l| l.starts_with(t)), "table {t} missing");
    }
    assert_eq!(da, db);
}

/// Every table is a resource that start-up repair and the test cleanup visit (a new table
/// missing from `service::RESOURCES` fails here), but `deployment` (the database's own id) and the
/// identities, limits and the audit log (`project`, `api_key`, `api_user`, `quota`,
/// `audit_log`: who calls, how much it may hold and what it did, with nothing in libvirt or Ceph
/// to reconcile), and `snapshot_volume` (part of a snapshot row).
#[test]
fn every_table_is_a_resource() {
    let db = TestDb::migrated();
    let rows: Vec<Line> = diesel::sql_query(
        "SELECT TABLE_NAME AS line FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = ? \
         AND TABLE_NAME NOT IN ('__diesel_schema_migrations', 'deployment', \
             'project', 'api_key', 'api_user', 'quota', 'audit_log', 'snapshot_volume')",
    )
    .bind::<Text, _>(&db.name)
    .load(&mut db.conn())
    .unwrap();
    let tables: std::collections::BTreeSet<String> = rows.into_iter().map(|l| l.line).collect();
    let resources = api_web::service::RESOURCES
        .iter()
        .map(|k| k.table.to_string())
        .collect();
    assert_eq!(tables, resources);
}

/// A database made by the first script (tables, no migration records) is adopted and brought
/// up to date by the later migrations.
#[test]
fn migrate_adopts_a_database_made_by_an_older_script() {
    let b = TestDb::new();
    let mut conn = b.conn();
    let first = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/2026-11-23-000001_create_tables/up.sql"
    ))
    .unwrap();
    conn.batch_execute(&first).unwrap();
    let applied = api_web::db::migrate(&mut conn).unwrap();
    // Every migration after the first, in order: "2026-11-24-000001_x" is version 20261124000001.
    let mut later: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().replace('-', "")[..14].to_string())
            .collect();
    later.sort();
    later.remove(0);
    assert!(!later.is_empty());
    assert_eq!(applied, later);
    let fresh = TestDb::migrated();
    assert_eq!(
        describe(&mut conn, &b.name),
        describe(&mut fresh.conn(), &fresh.name)
    );
}

#[test]
fn migrate_adopts_a_database_made_by_the_script() {
    let b = TestDb::new();
    let mut conn = b.conn();
    conn.batch_execute(&script_for(&b.name)).unwrap();
    let applied = api_web::db::migrate(&mut conn).unwrap();
    assert!(applied.is_empty(), "{applied:?}");
    // Running it again is a no-op too.
    assert!(api_web::db::migrate(&mut conn).unwrap().is_empty());
    let fresh = TestDb::new();
    let applied = api_web::db::migrate(&mut fresh.conn()).unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied.len(), migrations);
}

/// The migration to hosts makes every URI instances were created on a host and moves the
/// instances onto it by id.
#[test]
fn instances_move_onto_hosts_by_id() {
    let b = TestDb::new();
    let mut conn = b.conn();
    let first = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/2026-11-23-000001_create_tables/up.sql"
    ))
    .unwrap();
    conn.batch_execute(&first).unwrap();
    conn.batch_execute(
        "INSERT INTO instance (instance_id, instance_name, status, host_ip, host, cpu, memory, \
           image_id, `describe`, create_time, update_time) VALUES \
         ('i-00000001', 'a', 'running', '10.0.0.1', 'qemu:///system', 1, 256, 'ami-1', '', 1, 1), \
         ('i-00000002', 'b', 'stopped', '10.0.0.1', 'qemu:///system', 2, 512, 'ami-1', '', 1, 1), \
         ('i-00000003', 'c', 'running', '10.0.0.2', 'qemu+tcp://10.0.0.2/system', 1, 256, 'ami-1', '', 1, 1)",
    )
    .unwrap();
    api_web::db::migrate(&mut conn).unwrap();
    let hosts: Vec<Line> = diesel::sql_query(
        "SELECT CONCAT_WS('|', h.uri, h.address, h.status, h.host_name = h.host_id, \
           GROUP_CONCAT(i.instance_id ORDER BY i.instance_id)) AS line \
         FROM host h JOIN instance i ON i.host_id = h.host_id GROUP BY h.host_id ORDER BY h.uri",
    )
    .load(&mut conn)
    .unwrap();
    let hosts: Vec<String> = hosts.into_iter().map(|l| l.line).collect();
    assert_eq!(
        hosts,
        [
            "qemu+tcp://10.0.0.2/system|10.0.0.2|enabled|1|i-00000003",
            "qemu:///system|10.0.0.1|enabled|1|i-00000001,i-00000002",
        ]
    );
}
