//! The boot loader's console lines, without an allocator: `@ota` event lines for the events it
//! has (the boot phase, a brick), in exactly the JSON `ota_app`'s `Stamped::console_line` writes.

use core::fmt::{self, Write};

/// `@ota {"ms":MS,"ops":0,"event":"phase","phase":"boot"}`.
pub fn phase_boot(out: &mut impl Write, ms: u64) -> fmt::Result {
    write!(out, "@ota {{\"ms\":{ms},\"ops\":0,\"event\":\"phase\",\"phase\":\"boot\"}}\r\n")
}

/// `@ota {"ms":MS,"ops":0,"event":"bricked","why":WHY}`; `why` must need no JSON escaping.
pub fn bricked(out: &mut impl Write, ms: u64, why: &str) -> fmt::Result {
    debug_assert!(!why.contains(['"', '\\']) && why.chars().all(|c| c >= ' '));
    write!(out, "@ota {{\"ms\":{ms},\"ops\":0,\"event\":\"bricked\",\"why\":\"{why}\"}}\r\n")
}

#[cfg(test)]
mod tests {
    use ota_app::{Event, Phase, Stamped};

    #[test]
    fn the_boot_loaders_lines_are_the_applications_event_lines() {
        let mut line = String::new();
        super::phase_boot(&mut line, 42).unwrap();
        let event = Stamped { ms: 42, ops: 0, event: Event::Phase { phase: Phase::Boot } };
        assert_eq!(line, format!("{}\r\n", event.console_line()));
        let mut line = String::new();
        super::bricked(&mut line, 7, "no slot holds an image that verifies").unwrap();
        let event = Stamped {
            ms: 7,
            ops: 0,
            event: Event::Bricked { why: "no slot holds an image that verifies".into() },
        };
        assert_eq!(line, format!("{}\r\n", event.console_line()));
    }
}
