//! tmp
pub mod apns_sim;
pub mod histogram;
