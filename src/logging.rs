//! Log lines: `<time> <level> <target> [request_id=<id>] <message>`, request id included whenever
//! the line is written while a request is served (see `context`).

use std::io::Write;

/// Installs the logger; `RUST_LOG` chooses levels (default: info).
pub fn init() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, rec| {
            let ts = buf.timestamp_millis();
            match crate::context::current_opt() {
                Some(id) => writeln!(
                    buf,
                    "{ts} {} {} request_id={id} {}",
                    rec.level(),
                    rec.target(),
                    rec.args()
                ),
                None => writeln!(buf, "{ts} {} {} {}", rec.level(), rec.target(), rec.args()),
            }
        })
        .try_init();
}
