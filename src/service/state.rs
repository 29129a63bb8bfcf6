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
