pub mod restore_support;
