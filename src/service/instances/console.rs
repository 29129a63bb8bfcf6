//! The serial console: QEMU writes it to a log file per instance; we return its end.

use super::console_path;
use crate::db::instances::Instance;
use crate::error::{ApiError, ApiResult, Backend};
use crate::model::InstanceId;
use crate::service::{load, Ctx};
use std::io::{Read, Seek, SeekFrom};

/// The last `max_bytes` of the instance's serial console (carriage returns removed).
pub fn console(ctx: &Ctx, id: &InstanceId, max_bytes: u64) -> ApiResult<String> {
    load::<Instance>(&mut ctx.conn()?, id)?;
    let path = console_path(ctx, id);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => {
            return Err(ApiError::unavailable(
                Backend::Libvirt,
                format!("cannot read the console log {path}: {e}"),
            ))
        }
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(start))
        .and_then(|_| f.read_to_end(&mut buf))
        .map_err(|e| ApiError::unavailable(Backend::Libvirt, format!("cannot read {path}: {e}")))?;
    Ok(String::from_utf8_lossy(&buf).replace('\r', ""))
}
