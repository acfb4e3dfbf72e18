//! The C string functions littlefs calls, for a target with no C library (`target_os = "none"`).
//!
//! littlefs uses them on path names only (at most [`NAME_MAX_BYTES`](crate::NAME_MAX_BYTES) bytes
//! per component), so each is a plain byte loop. On the host the C library provides them, and this
//! module is compiled only for its tests, which hold each function to the host's.

use core::ffi::{c_char, c_int};

/// The length of the NUL-terminated string `s`.
///
/// # Safety
///
/// `s` points to a readable NUL-terminated string.
#[cfg_attr(target_os = "none", unsafe(no_mangle))]
pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut len = 0;
    // SAFETY: the string is readable up to and including its NUL, which ends the loop.
    while unsafe { *s.add(len) } != 0 {
        len += 1;
    }
    len
}

/// The first `c` (converted to a `char`) in the string `s`, its terminating NUL included, or null.
///
/// # Safety
///
/// `s` points to a readable NUL-terminated string.
#[cfg_attr(target_os = "none", unsafe(no_mangle))]
pub unsafe extern "C" fn strchr(s: *const c_char, c: c_int) -> *mut c_char {
    let c = c as c_char;
    let mut at = s;
    loop {
        // SAFETY: `at` has not passed the string's NUL, at which the loop returns.
        let byte = unsafe { *at };
        if byte == c {
            return at.cast_mut();
        }
        if byte == 0 {
            return core::ptr::null_mut();
        }
        // SAFETY: `at` is before the NUL, so the next byte is still in the string.
        at = unsafe { at.add(1) };
    }
}

/// Copies the string `src`, its NUL included, to `dst`, and returns `dst`.
///
/// # Safety
///
/// `src` points to a readable NUL-terminated string, `dst` to room for it and its NUL, and the two
/// do not overlap.
#[cfg_attr(target_os = "none", unsafe(no_mangle))]
pub unsafe extern "C" fn strcpy(dst: *mut c_char, src: *const c_char) -> *mut c_char {
    let mut i = 0;
    loop {
        // SAFETY: `i` is at most the string's length, and `dst` has room for as many bytes plus one.
        let byte = unsafe { *src.add(i) };
        // SAFETY: as above.
        unsafe { *dst.add(i) = byte };
        if byte == 0 {
            return dst;
        }
        i += 1;
    }
}

/// The length of the prefix of `s` made only of bytes in `accept`.
///
/// # Safety
///
/// `s` and `accept` point to readable NUL-terminated strings.
#[cfg_attr(target_os = "none", unsafe(no_mangle))]
pub unsafe extern "C" fn strspn(s: *const c_char, accept: *const c_char) -> usize {
    // SAFETY: the caller's contract, passed on.
    unsafe { span(s, accept, true) }
}

/// The length of the prefix of `s` made only of bytes not in `reject`.
///
/// # Safety
///
/// `s` and `reject` point to readable NUL-terminated strings.
#[cfg_attr(target_os = "none", unsafe(no_mangle))]
pub unsafe extern "C" fn strcspn(s: *const c_char, reject: *const c_char) -> usize {
    // SAFETY: the caller's contract, passed on.
    unsafe { span(s, reject, false) }
}

/// The length of the prefix of `s` whose bytes are all in `set` (`inside`) or all outside it.
///
/// # Safety
///
/// `s` and `set` point to readable NUL-terminated strings.
unsafe fn span(s: *const c_char, set: *const c_char, inside: bool) -> usize {
    let mut len = 0;
    loop {
        // SAFETY: `len` has not passed the NUL of `s`, at which the loop returns.
        let byte = unsafe { *s.add(len) };
        // SAFETY: `set` is NUL-terminated; the search stops at its NUL.
        if byte == 0 || unsafe { contains(set, byte) } != inside {
            return len;
        }
        len += 1;
    }
}

/// True if the string `set` holds the non-NUL `byte`.
///
/// # Safety
///
/// `set` points to a readable NUL-terminated string.
unsafe fn contains(set: *const c_char, byte: c_char) -> bool {
    let mut i = 0;
    loop {
        // SAFETY: `i` has not passed the NUL of `set`, at which the loop returns.
        let candidate = unsafe { *set.add(i) };
        if candidate == 0 {
            return false;
        }
        if candidate == byte {
            return true;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::ffi::{CStr, c_char, c_int};
    use std::ffi::CString;
    use std::vec::Vec;

    use proptest::prelude::*;

    /// The host C library's functions, the reference.
    mod host {
        use core::ffi::{c_char, c_int};

        unsafe extern "C" {
            pub fn strlen(s: *const c_char) -> usize;
            pub fn strchr(s: *const c_char, c: c_int) -> *mut c_char;
            pub fn strspn(s: *const c_char, accept: *const c_char) -> usize;
            pub fn strcspn(s: *const c_char, reject: *const c_char) -> usize;
        }
    }

    /// Short strings over a small alphabet, so that spans and matches are common.
    fn c_string() -> impl Strategy<Value = CString> {
        proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'.'), b'a'..=b'd', 0x80u8..=0xff], 0..12)
            .prop_map(|bytes| CString::new(bytes).unwrap())
    }

    fn offset(s: &CStr, found: *mut c_char) -> Option<usize> {
        (!found.is_null()).then(|| found as usize - s.as_ptr() as usize)
    }

    proptest! {
        #[test]
        fn string_functions_agree_with_the_host_c_library(s in c_string(), set in c_string(), c in any::<u8>()) {
            let (s, set) = (s.as_c_str(), set.as_c_str());
            // SAFETY: both are NUL-terminated strings that live across the calls.
            unsafe {
                prop_assert_eq!(super::strlen(s.as_ptr()), host::strlen(s.as_ptr()));
                prop_assert_eq!(super::strspn(s.as_ptr(), set.as_ptr()), host::strspn(s.as_ptr(), set.as_ptr()));
                prop_assert_eq!(super::strcspn(s.as_ptr(), set.as_ptr()), host::strcspn(s.as_ptr(), set.as_ptr()));
                let c = c_int::from(c);
                prop_assert_eq!(offset(s, super::strchr(s.as_ptr(), c)), offset(s, host::strchr(s.as_ptr(), c)));
            }
        }

        #[test]
        fn strcpy_copies_the_string_and_its_nul_only(s in c_string()) {
            let mut dst = [0x55 as c_char; 16];
            // SAFETY: `s` is NUL-terminated and at most 12 bytes long with its NUL; `dst` holds 16.
            let returned = unsafe { super::strcpy(dst.as_mut_ptr(), s.as_ptr()) };
            prop_assert_eq!(returned, dst.as_mut_ptr());
            let copied: Vec<u8> = dst.iter().map(|&b| b as u8).collect();
            let len = s.to_bytes_with_nul().len();
            prop_assert_eq!(&copied[..len], s.to_bytes_with_nul());
            prop_assert!(copied[len..].iter().all(|&b| b == 0x55));
        }
    }

    #[test]
    fn strchr_of_nul_finds_the_terminator() {
        let s = c"ab";
        // SAFETY: a NUL-terminated literal.
        let found = unsafe { super::strchr(s.as_ptr(), 0) };
        assert_eq!(offset(s, found), Some(2));
    }
}
