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
    /// Projects and API keys, straight in the database (the first admin key comes from here).
    #[command(subcommand)]
    Admin(Admin),
}

#[derive(Subcommand)]
enum Admin {
    /// Make a project.
    CreateProject {
        #[arg(long)]
        name: String,
    },
    /// Make an API key; its secret is printed once, alone on the last line.
    CreateKey {
        #[arg(long)]
        name: String,
        /// admin (everything, every project) or member (its project's resources).
        #[arg(long, default_value = "admin")]
        role: String,
        #[arg(long, default_value = api_web::service::auth::DEFAULT_PROJECT)]
        project: String,
        /// Days until the key stops working (default: never).
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// Make a user who logs in with POST /api/v1/auth/token; the password is read from
    /// standard input (its first line), never from the command line.
    CreateUser {
        #[arg(long)]
        name: String,
        /// admin (everything, every project) or member (its project's resources).
        #[arg(long, default_value = "admin")]
        role: String,
        #[arg(long, default_value = api_web::service::auth::DEFAULT_PROJECT)]
        project: String,
    },
    /// Disable a user: no more logins, and its tokens stop working within 5 s.
    DisableUser {
        /// The user's name.
        name: String,
    },
    /// Revoke a key by its id (key-...) or its name.
    RevokeKey {
        /// The key's id or name.
        key: String,
    },
}

/// glibc gives threads up to 8 malloc arenas per core, each keeping what was freed in it for
/// later use there. api-web's transfers (uploads, downloads, copies) run on threads of their own
/// and librbd's: with many arenas each transfer's buffers stay behind in arenas the next does not
/// reuse. Four arenas hold the resident size of a 1 GiB upload to its buffers (README,
/// Benchmarks); MALLOC_ARENA_MAX in the environment still decides when set.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt takes two integers; called before any thread is started.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
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
        Command::Admin(a) => match admin(&cfg, a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("api-web: {e}");
                ExitCode::FAILURE
            }
        },
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

fn admin(cfg: &Config, a: Admin) -> Result<(), String> {
    use api_web::service::auth;
    migrate(cfg)?;
    let pool = db::pool(
        &cfg.database.url,
        1,
        std::time::Duration::from_secs(cfg.database.connect_timeout_secs),
    );
    let mut conn = pool
        .get()
        .map_err(|e| format!("cannot connect to MySQL (database.url): {e}"))?;
    let fail = |e: api_web::error::ApiError| e.to_string();
    match a {
        Admin::CreateProject { name } => {
            let p = auth::create_project(&mut conn, &name).map_err(fail)?;
            println!("project {} ({}) created", p.project_id, p.project_name);
        }
        Admin::CreateKey {
            name,
            role,
            project,
            expires_in_days,
        } => {
            let role = auth::Role::parse(&role).map_err(fail)?;
            let expire = expires_in_days.map(|d| db::now() + d.saturating_mul(86_400));
            let k = auth::create_key(&mut conn, &name, role, &project, expire).map_err(fail)?;
            eprintln!(
                "key {} ({}, role {}, project {}) created; its secret is shown this once:",
                k.key.key_id, k.key.key_name, k.key.role, project
            );
            println!("{}", k.secret);
        }
        Admin::CreateUser {
            name,
            role,
            project,
        } => {
            let role = auth::Role::parse(&role).map_err(fail)?;
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
            let password = password.trim_end_matches(['\r', '\n']);
            let u = auth::create_user(&mut conn, &name, password, role, &project).map_err(fail)?;
            println!(
                "user {} ({}, role {}, project {}) created",
                u.user_id, u.user_name, u.role, project
            );
        }
        Admin::DisableUser { name } => {
            auth::disable_user(&mut conn, &name).map_err(fail)?;
            println!("user {name} disabled");
        }
        Admin::RevokeKey { key } => {
            let k = auth::revoke_key(&mut conn, &key).map_err(fail)?;
            println!("key {} ({}) revoked", k.key_id, k.key_name);
        }
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
    let metrics_ctx = ctx.clone();
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
        let metrics_listen = metrics_ctx.cfg.server.metrics_listen.clone();
        if metrics_listen.is_empty() {
            return server.run().await.map_err(|e| e.to_string());
        }
        let scrape = HttpServer::new(move || api::metrics_app(metrics_ctx.clone()))
            .workers(1)
            .bind(&metrics_listen)
            .map_err(|e| {
                format!("cannot listen on {metrics_listen} (server.metrics_listen): {e}")
            })?;
        log::info!("metrics (no credentials) on http://{metrics_listen}/metrics");
        futures_util::future::try_join(server.run(), scrape.run())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
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
