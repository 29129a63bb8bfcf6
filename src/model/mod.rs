//! The vocabulary every layer shares, below all of them: typed ids (`InstanceId`, `VolumeId`...)
//! that cannot be swapped, and the status of each resource as an enum with its one state machine.
//! Both map to the VARCHAR columns through diesel's `ToSql`/`FromSql` and serialise as the
//! strings the API has always shown.

pub mod ids;
pub mod status;

pub use ids::{HostId, ImageId, InstanceId, NicId, OperationId, SnapshotId, VolumeId};
pub use status::{
    HostStatus, IllegalTransition, ImageStatus, InstanceStatus, Lifecycle, NicStatus,
    OperationStatus, SnapshotStatus, VolumeStatus,
};

/// Implements diesel's text mapping for a type with `as_str()` and `parse(&str) -> Option<Self>`.
macro_rules! text_sql {
    ($t:ty) => {
        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::mysql::Mysql> for $t {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::mysql::Mysql>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::mysql::Mysql>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::mysql::Mysql> for $t {
            fn from_sql(bytes: diesel::mysql::MysqlValue<'_>) -> diesel::deserialize::Result<Self> {
                let s = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    diesel::mysql::Mysql,
                >>::from_sql(bytes)?;
                <$t>::parse(&s)
                    .ok_or_else(|| format!("{:?} is not a valid {}", s, stringify!($t)).into())
            }
        }
    };
}
pub(crate) use text_sql;
