//! The state machines, one enum and one exhaustive `valid_transition` each (model:
//! cloud-hypervisor's `VmState::valid_transition`): a new status does not compile until every
//! arm says where it may go. An illegal transition is a bug (`IllegalTransition`); a legal one
//! that loses a race is a compare-and-set that changed no row (the caller answers 409).

use std::fmt;

/// What every status enum offers the generic code (transitions, lists, parsing).
pub trait Lifecycle: Copy + Eq + fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// The resource's name in messages ("volume", "network interface").
    const RESOURCE: &'static str;
    /// Every status, in the order the API documents them.
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn valid_transition(self, to: Self) -> bool;

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }

    /// `Ok` if `self -> to` is in the state machine.
    fn check(self, to: Self) -> Result<(), IllegalTransition> {
        if self.valid_transition(to) {
            Ok(())
        } else {
            Err(IllegalTransition {
                resource: Self::RESOURCE,
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }

    /// "a, b, c": the statuses a list filter accepts.
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A transition the state machine does not have: a bug in the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {resource} transition {from} -> {to}")]
pub struct IllegalTransition {
    pub resource: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident, $resource:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::AsExpression, diesel::FromSqlRow)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub enum $name {
            $($variant),+
        }

        impl Lifecycle for $name {
            const RESOURCE: &'static str = $resource;
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn valid_transition(self, to: Self) -> bool {
                $name::valid_transition(self, to)
            }
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
            pub fn parse(s: &str) -> Option<Self> {
                <Self as Lifecycle>::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <Self as Lifecycle>::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{s:?} is not one of {}",
                        <Self as Lifecycle>::names()
                    ))
                })
            }
        }

        super::text_sql!($name);
    };
}

status_enum!(
    /// `creating -> available | error`; `available | error -> deleting`; `deleting -> available |
    /// error` (a delete that could not finish goes back to where it started).
    ImageStatus, "image" {
        Creating => "creating",
        Available => "available",
        Deleting => "deleting",
        Error => "error",
    }
);

impl ImageStatus {
    /// Its one state machine: where each status may go.
    pub fn valid_transition(self, to: Self) -> bool {
        use ImageStatus::*;
        match self {
            Creating => matches!(to, Available | Error),
            Available => matches!(to, Deleting),
            Deleting => matches!(to, Available | Error),
            Error => matches!(to, Deleting),
        }
    }
}

status_enum!(
    /// `creating -> running | error`. Power changes go through a transitional status, each a
    /// compare-and-set claimed by one request: `stopped -> starting`, `running | paused ->
    /// stopping`, `running -> pausing`, `paused -> resuming`, `running -> rebooting` (reboot and
    /// reset); each of these ends in what libvirt then reports (`running | paused | stopped`, or
    /// `error` when the domain has vanished). Between the settled statuses (`running`,
    /// `stopped`, `paused`) any move libvirt reports (a change made outside api-web) is allowed.
    /// `stopped -> restoring -> stopped`: its disks rolled back to a snapshot (a failed rollback
    /// ends `stopped` too, saying so: a restore again completes it).
    /// `running | paused | stopped -> snapshotting -> running | paused | stopped | error`: its
    /// disks snapshotted together (a running guest suspended meanwhile); it ends in what
    /// libvirt then reports.
    /// `running | paused | stopped -> migrating -> running | paused | stopped | error`: moved to
    /// another host (live when it runs); it ends in what libvirt reports where it then is.
    /// Any settled status (and `error`) `-> destroying`; `destroying -> error` when a step fails
    /// (a retry goes `error -> destroying`).
    InstanceStatus, "instance" {
        Creating => "creating",
        Running => "running",
        Stopped => "stopped",
        Paused => "paused",
        Starting => "starting",
        Stopping => "stopping",
        Pausing => "pausing",
        Resuming => "resuming",
        Rebooting => "rebooting",
        Restoring => "restoring",
        Snapshotting => "snapshotting",
        Migrating => "migrating",
        Destroying => "destroying",
        Error => "error",
    }
);

impl InstanceStatus {
    /// Its one state machine: where each status may go.
    pub fn valid_transition(self, to: Self) -> bool {
        use InstanceStatus::*;
        match self {
            Creating => matches!(to, Running | Error),
            // `-> error`: the domain vanished behind our back (nothing left to power);
            // between settled statuses directly: a power change made outside api-web, observed.
            Running => matches!(
                to,
                Stopping
                    | Pausing
                    | Rebooting
                    | Snapshotting
                    | Migrating
                    | Destroying
                    | Stopped
                    | Paused
                    | Error
            ),
            Paused => matches!(
                to,
                Resuming
                    | Stopping
                    | Snapshotting
                    | Migrating
                    | Destroying
                    | Running
                    | Stopped
                    | Error
            ),
            Stopped => matches!(
                to,
                Starting
                    | Restoring
                    | Snapshotting
                    | Migrating
                    | Destroying
                    | Running
                    | Paused
                    | Error
            ),
            // A rollback of every disk to a snapshot, of a stopped instance.
            Restoring => matches!(to, Stopped | Error),
            // A migration ends where the domain then is, with what libvirt reports.
            Starting | Stopping | Pausing | Resuming | Rebooting | Snapshotting | Migrating => {
                matches!(to, Running | Paused | Stopped | Error)
            }
            Destroying => matches!(to, Error),
            Error => matches!(to, Destroying),
        }
    }

    /// A status no operation holds and libvirt's power state can be compared with.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            InstanceStatus::Running | InstanceStatus::Stopped | InstanceStatus::Paused
        )
    }

    /// A power change in flight (claimed by an operation that ends in what libvirt reports).
    pub fn is_power_change(self) -> bool {
        use InstanceStatus::*;
        matches!(self, Starting | Stopping | Pausing | Resuming | Rebooting)
    }
}

status_enum!(
    /// `creating -> available | error`, or `-> attaching` for a data volume made by instance
    /// create, or `-> in-use` for an instance's root disk; `available -> attaching -> in-use`
    /// (back to `available` if the attach fails); `in-use -> detaching -> available` (stays
    /// `detaching` while the guest holds the disk; a retry goes on from there, or back to
    /// `in-use` if the guest kept it); `available -> restoring -> available` (rolled back to a
    /// snapshot); `available | error -> deleting -> (gone) | back`.
    VolumeStatus, "volume" {
        Creating => "creating",
        Available => "available",
        Attaching => "attaching",
        InUse => "in-use",
        Detaching => "detaching",
        Restoring => "restoring",
        Deleting => "deleting",
        Error => "error",
    }
);

impl VolumeStatus {
    /// Its one state machine: where each status may go.
    pub fn valid_transition(self, to: Self) -> bool {
        use VolumeStatus::*;
        match self {
            Creating => matches!(to, Available | Error | Attaching | InUse),
            Available => matches!(to, Attaching | Restoring | Deleting),
            // Rolled back to a snapshot (a failed rollback goes back too, saying so).
            Restoring => matches!(to, Available),
            Attaching => matches!(to, InUse | Available),
            InUse => matches!(to, Detaching),
            Detaching => matches!(to, Available | InUse),
            Deleting => matches!(to, Available | Error),
            Error => matches!(to, Deleting),
        }
    }
}

status_enum!(
    /// `available -> attaching -> attached -> detaching -> available`; `attaching -> available`
    /// when the attach fails; `detaching` stays while the guest holds the device (or goes back
    /// to `attached`).
    NicStatus, "network interface" {
        Available => "available",
        Attaching => "attaching",
        Attached => "attached",
        Detaching => "detaching",
        Error => "error",
    }
);

impl NicStatus {
    /// Its one state machine: where each status may go.
    pub fn valid_transition(self, to: Self) -> bool {
        use NicStatus::*;
        match self {
            Available => matches!(to, Attaching),
            Attaching => matches!(to, Attached | Available),
            Attached => matches!(to, Detaching),
            Detaching => matches!(to, Available | Attached),
            Error => false,
        }
    }
}

status_enum!(
    /// `running -> done | failed`: an operation runs (owned, its lease renewed) until it has
    /// finished or has been undone; whoever holds the lease moves it on.
    OperationStatus, "operation" {
        Running => "running",
        Done => "done",
        Failed => "failed",
    }
);

impl OperationStatus {
    /// Its one state machine: where each status may go.
    pub fn valid_transition(self, to: Self) -> bool {
        use OperationStatus::*;
        match self {
            Running => matches!(to, Done | Failed),
            Done | Failed => false,
        }
    }
}

status_enum!(
    /// `enabled <-> disabled`, an admin's choice: a disabled host (maintenance) gets no new
    /// instances; what runs there keeps running. Whether it answers is `online`, not a status.
    HostStatus, "host" {
        Enabled => "enabled",
        Disabled => "disabled",
    }
);

impl HostStatus {
    /// Its one state machine: where each status may go.
    pub fn valid_transition(self, to: Self) -> bool {
        use HostStatus::*;
        match self {
            Enabled => matches!(to, Disabled),
            Disabled => matches!(to, Enabled),
        }
    }
}

status_enum!(
    /// `creating -> available | error`; `available -> restoring -> available` (its disks rolled
    /// back to it; a delete waits); `available | error -> deleting -> (gone) | available |
    /// error` (a delete that could not remove every RBD snapshot goes back).
    SnapshotStatus, "snapshot" {
        Creating => "creating",
        Available => "available",
        Restoring => "restoring",
        Deleting => "deleting",
        Error => "error",
    }
);

impl SnapshotStatus {
    /// Its one state machine: where each status may go.
    pub fn valid_transition(self, to: Self) -> bool {
        use SnapshotStatus::*;
        match self {
            Creating => matches!(to, Available | Error),
            Available => matches!(to, Restoring | Deleting),
            Restoring => matches!(to, Available),
            Deleting => matches!(to, Available | Error),
            Error => matches!(to, Deleting),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<S: Lifecycle>() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(*s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(S::parse("nonsense"), None);
    }

    #[test]
    fn every_status_parses_back() {
        round_trip::<ImageStatus>();
        round_trip::<InstanceStatus>();
        round_trip::<VolumeStatus>();
        round_trip::<NicStatus>();
        round_trip::<SnapshotStatus>();
        round_trip::<HostStatus>();
        assert_eq!(VolumeStatus::InUse.as_str(), "in-use");
        assert_eq!(
            serde_json::to_string(&VolumeStatus::InUse).unwrap(),
            "\"in-use\""
        );
    }

    #[test]
    fn host_transitions() {
        use HostStatus::*;
        assert!(Enabled.valid_transition(Disabled));
        assert!(Disabled.valid_transition(Enabled));
        assert!(!Enabled.valid_transition(Enabled));
    }

    #[test]
    fn image_transitions() {
        use ImageStatus::*;
        assert!(Creating.valid_transition(Available));
        assert!(Available.valid_transition(Deleting));
        assert!(Deleting.valid_transition(Available));
        assert!(Error.valid_transition(Deleting));
        assert!(!Available.valid_transition(Creating));
        assert!(!Deleting.valid_transition(Deleting));
        assert!(!Creating.valid_transition(Deleting));
    }

    #[test]
    fn instance_transitions() {
        use InstanceStatus::*;
        for (from, to) in [
            (Creating, Running),
            (Running, Stopping),
            (Stopping, Stopped),
            (Stopped, Starting),
            (Starting, Running),
            (Running, Pausing),
            (Pausing, Paused),
            (Paused, Resuming),
            (Resuming, Running),
            (Paused, Stopping),
            (Running, Rebooting),
            (Rebooting, Running),
            (Error, Destroying),
            (Destroying, Error),
        ] {
            assert!(from.valid_transition(to), "{from} -> {to}");
        }
        for (from, to) in [
            (Creating, Destroying),
            (Running, Starting),
            (Stopped, Stopping),
            (Destroying, Running),
            (Starting, Destroying),
            (Stopped, Pausing),
            (Paused, Pausing),
            (Paused, Rebooting),
            (Pausing, Destroying),
            (Rebooting, Destroying),
        ] {
            assert!(!from.valid_transition(to), "{from} -> {to}");
        }
    }

    #[test]
    fn volume_transitions() {
        use VolumeStatus::*;
        for (f, t) in [
            (Creating, Available),
            (Available, Attaching),
            (Attaching, InUse),
            (Attaching, Available),
            (InUse, Detaching),
            (Detaching, Available),
            (Available, Deleting),
        ] {
            assert!(f.valid_transition(t), "{f} -> {t}");
        }
        for (f, t) in [
            (InUse, Deleting),
            (Attaching, Deleting),
            (InUse, Available),
            (Available, InUse),
            (Detaching, Deleting),
        ] {
            assert!(!f.valid_transition(t), "{f} -> {t}");
        }
    }

    #[test]
    fn nic_transitions() {
        use NicStatus::*;
        assert!(Available.valid_transition(Attaching));
        assert!(Attached.valid_transition(Detaching));
        assert!(Detaching.valid_transition(Available));
        assert!(!Attached.valid_transition(Available));
        assert!(!Available.valid_transition(Attached));
        assert!(!Error.valid_transition(Attaching));
    }

    #[test]
    fn illegal_transition_names_both_states() {
        let e = NicStatus::Attached.check(NicStatus::Available).unwrap_err();
        assert_eq!(
            e.to_string(),
            "illegal network interface transition attached -> available"
        );
    }
}
