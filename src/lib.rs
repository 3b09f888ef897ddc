pub mod ops_support;
