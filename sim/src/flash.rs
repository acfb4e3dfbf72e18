//! Strict NOR flash model.
