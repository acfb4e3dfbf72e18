//! Reports written from a [`crate::result::Run`]: JUnit XML for CI, JSON for tools, a per-run log
//! folder, and a timeline picture of each trial.
