//! The first-boot filesystem merge (§4 of the reference).
