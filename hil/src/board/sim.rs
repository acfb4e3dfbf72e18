//! The in-process simulator board.
