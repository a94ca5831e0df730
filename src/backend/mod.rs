//! Where runtimes live: one module per [`crate::runtime::Backend`] implementation.

pub mod process;
