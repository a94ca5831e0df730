//! Where runtimes live: one module per [`crate::runtime::Backend`] implementation.

pub mod kubernetes;
pub mod process;
