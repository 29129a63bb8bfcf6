//! The per-OS domain templates of `libvirt.template_dir`, read and checked once at start-up.

use super::domain::check_template;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Templates {
    pub linux: String,
    pub windows: String,
}

impl Templates {
    /// Reads `linux.xml` and `windows.xml`; a missing or broken one is an error naming the file.
    pub fn load(dir: &str) -> Result<Templates, String> {
        let read = |f: &str| -> Result<String, String> {
            let p = Path::new(dir).join(f);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("domain template {}: {e}", p.display()))?;
            check_template(&text).map_err(|e| format!("domain template {}: {e}", p.display()))?;
            Ok(text)
        };
        Ok(Templates {
            linux: read("linux.xml")?,
            windows: read("windows.xml")?,
        })
    }

    pub fn for_os(&self, os_type: &str) -> &str {
        match os_type {
            "Windows" => &self.windows,
            _ => &self.linux,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_template_is_named() {
        let dir = std::env::temp_dir().join(format!("tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("linux.xml"), "<domain/>").unwrap();
        std::fs::write(dir.join("windows.xml"), "<domain><name>x</name></domain>").unwrap();
        let e = Templates::load(dir.to_str().unwrap()).unwrap_err();
        assert!(
            e.contains("windows.xml") && e.contains("<name> is managed"),
            "{e}"
        );
        std::fs::remove_file(dir.join("windows.xml")).unwrap();
        let e = Templates::load(dir.to_str().unwrap()).unwrap_err();
        assert!(
            e.contains("windows.xml") && e.contains("No such file"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
