//! Placeholder: the simulator arrives with issue 3.
