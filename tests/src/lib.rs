//! Helpers for the kernel and lab tests.
