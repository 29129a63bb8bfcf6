//! Server-generated ids: a prefix and 8 lowercase hex digits (`ami-1a2b3c4d`). Uniqueness is the
//! database's job (primary keys); callers retry on a collision.

use rand::Rng;

pub const IMAGE: &str = "ami-";
pub const VOLUME: &str = "vol-";
pub const NIC: &str = "eni-";
pub const INSTANCE: &str = "i-";

pub fn new_id(prefix: &str) -> String {
    let n: u32 = rand::rng().random();
    format!("{prefix}{n:08x}")
}

/// Names accepted for RBD images we register (they become image_ids): ASCII letters, digits,
/// `.`, `_`, `-`, starting with a letter or digit, at most 128 characters.
pub fn valid_image_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_documented_shape() {
        for p in [IMAGE, VOLUME, NIC, INSTANCE] {
            let id = new_id(p);
            let tail = id.strip_prefix(p).unwrap();
            assert_eq!(tail.len(), 8);
            assert!(tail
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(valid_image_id(&id));
        }
    }

    #[test]
    fn image_id_charset() {
        assert!(valid_image_id("ubuntu-22.04_base"));
        assert!(!valid_image_id(""));
        assert!(!valid_image_id("-x"));
        assert!(!valid_image_id("a/b"));
        assert!(!valid_image_id("a b"));
        assert!(!valid_image_id("a@snap"));
        assert!(!valid_image_id(&"a".repeat(129)));
    }
}
