//! Image descriptors: each app slot's last erase unit says which image the slot holds
//! ([`Descriptor`]), so the boot loader can still boot a verifying image when no boot-state
//! record decodes (both copies of every record destroyed).
//!
//! The updater and a snapshot write the target slot's descriptor after its image verified and
//! before the record that names it: until that record lands only the inactive slot has changed,
//! as before. A descriptor is a fallback, never the state: the boot loader reads descriptors
//! only when no record decodes, and boots an image only when it verifies against its
//! descriptor's length and SHA-256.

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

use crate::flash::{self, FlashError};
use crate::layout::{Layout, Slot};
use crate::state::{Descriptor, RECORD_SIZE_BYTES};

/// The descriptor in `slot`, if one decodes.
pub fn read<F: ReadNorFlash>(
    flash: &mut F,
    layout: &Layout,
    slot: Slot,
) -> Result<Option<Descriptor>, FlashError> {
    let mut raw = [0u8; RECORD_SIZE_BYTES];
    flash::read(flash, layout.descriptor(slot).offset, &mut raw)?;
    Ok(Descriptor::decode(&raw).ok())
}

/// Writes `descriptor` into `slot`'s descriptor unit: nothing when the unit already holds it,
/// else an erase of the unit and one program. A descriptor that reads back wrong (a stuck bit)
/// is left as it is: the slot then has no descriptor, which only a device that also loses
/// every record would notice. A flash error (the power going, among others) is returned.
pub(crate) fn write<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    slot: Slot,
    descriptor: &Descriptor,
) -> Result<(), FlashError> {
    let raw = descriptor.encode();
    let region = layout.descriptor(slot);
    let mut held = [0u8; RECORD_SIZE_BYTES];
    flash::read(flash, region.offset, &mut held)?;
    if held == raw {
        return Ok(());
    }
    flash::erase(flash, region.offset, region.offset + region.size_bytes)?;
    flash::program(flash, region.offset, &raw)
}
