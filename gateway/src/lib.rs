//! Liveline gateway.
