use actix_web::{web, HttpServer};
use api_web::config::Config;
use api_web::service::{operations, Ctx, RESOURCES};
use api_web::{api, db, logging};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// api-web: libvirt + Ceph RBD cloud control plane.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (default: $API_WEB_CONFIG, else ./config.toml, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check the configuration and print it.
    CheckConfig,
}

fn main() -> ExitCode {
    // FAILPOINTS=<name>=<action>;... (only in builds with the `failpoints` feature: tests).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    logging::init();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("api-web: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!("{cfg:#?}");
            ExitCode::SUCCESS
        }
        Command::Migrate => match migrate(&cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("api-web: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve => match serve(cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("api-web: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn migrate(cfg: &Config) -> Result<(), String> {
    use diesel::Connection;
    let mut conn = diesel::MysqlConnection::establish(&cfg.database.url)
        .map_err(|e| format!("cannot connect to MySQL (database.url): {e}"))?;
    let applied = db::migrate(&mut conn).map_err(|e| format!("migration failed: {e}"))?;
    if applied.is_empty() {
        log::info!("database schema is up to date");
    }
    for v in applied {
        log::info!("applied migration {v}");
    }
    Ok(())
}

fn serve(cfg: Config) -> Result<(), String> {
    if cfg.database.migrate_on_start {
        migrate(&cfg)?;
    }
    let listen = cfg.server.listen.clone();
    let workers = cfg.server.workers;
    let ctx = web::Data::new(Ctx::new(cfg)?);
    let grace = std::time::Duration::from_secs(ctx.cfg.operations.shutdown_grace_secs);
    operations::start_background(&ctx.clone().into_inner());
    // Repairs what a crash left half-done (rows untouched for 10 minutes: no live request is
    // still working on them); a backend that is down now only delays it to the next start.
    for kind in RESOURCES {
        match (kind.reconcile)(&ctx, 600) {
            Ok(0) => {}
            Ok(n) => log::warn!("reconciliation repaired {n} {} row(s)", kind.table),
            Err(e) => log::warn!("{} reconciliation skipped: {e}", kind.table),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let app_ctx = ctx.clone();
    rt.block_on(async move {
        let mut server = HttpServer::new(move || api::app(app_ctx.clone()));
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server
            .bind(&listen)
            .map_err(|e| format!("cannot listen on {listen} (server.listen): {e}"))?;
        log::info!(
            "api-web {} listening on http://{listen}",
            env!("CARGO_PKG_VERSION")
        );
        // SIGTERM/SIGINT: actix stops taking connections and lets in-flight requests finish.
        server.run().await.map_err(|e| e.to_string())
    })?;
    // Then the background operations get their grace; what is left is taken over by the next
    // process once its lease runs out.
    let left = operations::wait_idle(&ctx, grace);
    if left > 0 {
        log::warn!(
            "stopping with {left} operation(s) unfinished after {}s; another api-web process takes them over when their lease runs out",
            grace.as_secs()
        );
    } else {
        log::info!("stopped: no operation left running");
    }
    Ok(())
}
