//! Progress goes through this trait, so the library does not depend on how the terminal shows it.

use crate::result::{StepRecord, Trial};

pub trait Progress {
    /// A trial starts: scenario `index` of `total`.
    fn trial_started(&mut self, index: usize, total: usize, scenario: &str, board: &str);
    fn step_finished(&mut self, step: &StepRecord);
    fn trial_finished(&mut self, trial: &Trial);
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn trial_started(&mut self, _: usize, _: usize, _: &str, _: &str) {}
    fn step_finished(&mut self, _: &StepRecord) {}
    fn trial_finished(&mut self, _: &Trial) {}
}
