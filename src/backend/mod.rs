//! Where runtimes live: one module per [`crate::runtime::Backend`] implementation, and the pieces
//! both share.

pub mod kubernetes;
pub mod locks;
pub mod process;
