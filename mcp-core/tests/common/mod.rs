//! Helpers shared by the integration tests. Each test binary compiles this
//! module on its own (`mod common;`), so items one binary does not use are
//! marked `#[allow(dead_code)]`.

pub mod mcias_double;
