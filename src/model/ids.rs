//! Server-generated ids: a prefix and 8 lowercase hex digits (`ami-1a2b3c4d`), one type per
//! resource so that a volume id cannot be passed where an instance id is wanted. Uniqueness is
//! the database's job (primary keys); callers retry on a collision (`service::fresh_id`).
//! Registered images keep their RBD name as id (see `valid_image_id`).

use rand::Rng;
use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Serialize,
            Deserialize,
            diesel::AsExpression,
            diesel::FromSqlRow,
        )]
        #[serde(transparent)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new random id (callers retry when it collides).
            pub fn generate() -> Self {
                let n: u32 = rand::rng().random();
                $name(format!("{}{n:08x}", $prefix))
            }

            /// An id as a client or a row gave it (not checked: an unknown id is a 404 later).
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether `s` has the shape of a generated id: the prefix and 8 lowercase hex
            /// digits (what reconciliation counts as api-web's own in libvirt and Ceph).
            pub fn is_generated(s: &str) -> bool {
                s.strip_prefix($prefix).is_some_and(|h| {
                    h.len() == 8 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                })
            }

            fn parse(s: &str) -> Option<Self> {
                Some($name(s.to_string()))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        super::text_sql!($name);
    };
}

id_type!(
    /// An image: `ami-...`, or the RBD name of a registered image.
    ImageId,
    "ami-"
);
id_type!(
    /// A volume (data volume or an instance's root disk): `vol-...`.
    VolumeId,
    "vol-"
);
id_type!(
    /// A network interface: `eni-...`.
    NicId,
    "eni-"
);
id_type!(
    /// An instance: `i-...`; also its libvirt domain's name.
    InstanceId,
    "i-"
);
id_type!(
    /// A snapshot of an instance's disks or of one volume: `snap-...`; also the name of its
    /// RBD snapshot on each volume it covers.
    SnapshotId,
    "snap-"
);
id_type!(
    /// A long operation (service::operations): `op-...`.
    OperationId,
    "op-"
);
id_type!(
    /// A hypervisor host (a libvirt URI): `host-...`.
    HostId,
    "host-"
);

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
        let ids = [
            (ImageId::generate().to_string(), ImageId::PREFIX),
            (VolumeId::generate().to_string(), VolumeId::PREFIX),
            (NicId::generate().to_string(), NicId::PREFIX),
            (InstanceId::generate().to_string(), InstanceId::PREFIX),
        ];
        for (id, p) in ids {
            let tail = id.strip_prefix(p).unwrap();
            assert_eq!(tail.len(), 8);
            assert!(tail
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(valid_image_id(&id));
        }
    }

    #[test]
    fn ids_serialise_as_plain_strings() {
        let v = VolumeId::new("vol-1a2b3c4d");
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"vol-1a2b3c4d\"");
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
