//! The scenario engine.
