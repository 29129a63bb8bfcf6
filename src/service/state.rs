//! The state machines, one place each. A transition not listed is illegal (the caller answers 409).

/// Image statuses: `creating -> available`, `available -> deleting`, `deleting -> available`
/// (a delete that could not finish), `creating -> error`.
pub mod image {
    pub const CREATING: &str = "creating";
    pub const AVAILABLE: &str = "available";
    pub const DELETING: &str = "deleting";
    pub const ERROR: &str = "error";

    pub fn valid_transition(from: &str, to: &str) -> bool {
        matches!(
            (from, to),
            (CREATING, AVAILABLE)
                | (CREATING, ERROR)
                | (AVAILABLE, DELETING)
                | (DELETING, AVAILABLE)
                | (ERROR, DELETING)
        )
    }
}

/// Instance statuses: `creating -> running | error`; `running -> stopping -> stopped | running`;
/// `stopped -> starting -> running | stopped`; any settled status (and `error`) `-> destroying`;
/// `destroying -> error` when a step fails (a retry goes `error -> destroying` again).
pub mod instance {
    pub const CREATING: &str = "creating";
    pub const RUNNING: &str = "running";
    pub const STOPPED: &str = "stopped";
    pub const STARTING: &str = "starting";
    pub const STOPPING: &str = "stopping";
    pub const DESTROYING: &str = "destroying";
    pub const ERROR: &str = "error";

    pub const ALL: &[&str] = &[
        CREATING, RUNNING, STOPPED, STARTING, STOPPING, DESTROYING, ERROR,
    ];

    pub fn valid_transition(from: &str, to: &str) -> bool {
        matches!(
            (from, to),
            (CREATING, RUNNING)
                | (CREATING, ERROR)
                | (RUNNING, STOPPING)
                | (STOPPING, STOPPED)
                | (STOPPING, RUNNING)
                | (STOPPED, STARTING)
                | (STARTING, RUNNING)
                | (STARTING, STOPPED)
                | (RUNNING, DESTROYING)
                | (STOPPED, DESTROYING)
                | (ERROR, DESTROYING)
                | (DESTROYING, ERROR)
        )
    }
}

/// Volume statuses: `creating -> available` (or `-> attaching` for a data volume made by
/// instance create); `available -> attaching -> in-use` (back to
/// `available` if the attach fails); `in-use -> detaching -> available` (stays `detaching` while
/// the guest holds the disk; a retry goes on from there); `available -> deleting`.
pub mod volume {
    pub const CREATING: &str = "creating";
    pub const AVAILABLE: &str = "available";
    pub const ATTACHING: &str = "attaching";
    pub const IN_USE: &str = "in-use";
    pub const DETACHING: &str = "detaching";
    pub const DELETING: &str = "deleting";
    pub const ERROR: &str = "error";

    pub const ALL: &[&str] = &[
        CREATING, AVAILABLE, ATTACHING, IN_USE, DETACHING, DELETING, ERROR,
    ];

    pub fn valid_transition(from: &str, to: &str) -> bool {
        matches!(
            (from, to),
            (CREATING, AVAILABLE)
                | (CREATING, ERROR)
                // a data volume made by instance create goes straight to its instance
                | (CREATING, ATTACHING)
                | (AVAILABLE, ATTACHING)
                | (ATTACHING, IN_USE)
                | (ATTACHING, AVAILABLE)
                | (IN_USE, DETACHING)
                | (DETACHING, AVAILABLE)
                | (DETACHING, IN_USE)
                | (AVAILABLE, DELETING)
                | (DELETING, AVAILABLE)
                | (ERROR, DELETING)
        )
    }
}

/// NIC statuses: `available -> attaching -> attached -> detaching -> available`; `attaching ->
/// available` when the attach fails; `detaching` stays while the guest holds the device.
pub mod nic {
    pub const AVAILABLE: &str = "available";
    pub const ATTACHING: &str = "attaching";
    pub const ATTACHED: &str = "attached";
    pub const DETACHING: &str = "detaching";
    pub const ERROR: &str = "error";

    pub const ALL: &[&str] = &[AVAILABLE, ATTACHING, ATTACHED, DETACHING, ERROR];

    pub fn valid_transition(from: &str, to: &str) -> bool {
        matches!(
            (from, to),
            (AVAILABLE, ATTACHING)
                | (ATTACHING, ATTACHED)
                | (ATTACHING, AVAILABLE)
                | (ATTACHED, DETACHING)
                | (DETACHING, AVAILABLE)
                | (DETACHING, ATTACHED)
        )
    }
}

#[cfg(test)]
mod nic_tests {
    use super::nic::*;

    #[test]
    fn nic_transitions() {
        assert!(valid_transition(AVAILABLE, ATTACHING));
        assert!(valid_transition(ATTACHED, DETACHING));
        assert!(valid_transition(DETACHING, AVAILABLE));
        assert!(!valid_transition(ATTACHED, AVAILABLE));
        assert!(!valid_transition(AVAILABLE, ATTACHED));
        assert!(!valid_transition(ERROR, ATTACHING));
    }
}

#[cfg(test)]
mod volume_tests {
    use super::volume::*;

    #[test]
    fn volume_transitions() {
        for (f, t) in [
            (CREATING, AVAILABLE),
            (AVAILABLE, ATTACHING),
            (ATTACHING, IN_USE),
            (ATTACHING, AVAILABLE),
            (IN_USE, DETACHING),
            (DETACHING, AVAILABLE),
            (AVAILABLE, DELETING),
        ] {
            assert!(valid_transition(f, t), "{f} -> {t}");
        }
        for (f, t) in [
            (IN_USE, DELETING),
            (ATTACHING, DELETING),
            (IN_USE, AVAILABLE),
            (AVAILABLE, IN_USE),
            (DETACHING, DELETING),
        ] {
            assert!(!valid_transition(f, t), "{f} -> {t}");
        }
    }
}

#[cfg(test)]
mod instance_tests {
    use super::instance::*;

    #[test]
    fn instance_transitions() {
        for (from, to) in [
            (CREATING, RUNNING),
            (RUNNING, STOPPING),
            (STOPPING, STOPPED),
            (STOPPED, STARTING),
            (STARTING, RUNNING),
            (ERROR, DESTROYING),
            (DESTROYING, ERROR),
        ] {
            assert!(valid_transition(from, to), "{from} -> {to}");
        }
        for (from, to) in [
            (CREATING, DESTROYING),
            (RUNNING, STARTING),
            (STOPPED, STOPPING),
            (DESTROYING, RUNNING),
            (STARTING, DESTROYING),
        ] {
            assert!(!valid_transition(from, to), "{from} -> {to}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::image::*;

    #[test]
    fn image_transitions() {
        assert!(valid_transition(CREATING, AVAILABLE));
        assert!(valid_transition(AVAILABLE, DELETING));
        assert!(valid_transition(DELETING, AVAILABLE));
        assert!(valid_transition(ERROR, DELETING));
        assert!(!valid_transition(AVAILABLE, CREATING));
        assert!(!valid_transition(DELETING, DELETING));
        assert!(!valid_transition(CREATING, DELETING));
    }
}
